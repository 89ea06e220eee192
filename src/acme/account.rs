//! The ACME account: loaded from `state_dir` when this CA already knows us, created (and
//! stored, mode 0600) otherwise. One account per directory URL.

use instant_acme::{Account, AccountCredentials, NewAccount};

use super::store::{self, CertStore};
use super::{order, AcmeError};
use crate::config::AcmeConfig;

/// The account for this directory: the stored one, else a new one (stored 0600).
pub(super) async fn ensure_account(
    cached: &mut Option<(String, Account)>,
    acme: &AcmeConfig,
    store: &CertStore,
) -> Result<Account, AcmeError> {
    if let Some((directory, account)) = cached {
        if *directory == acme.directory {
            return Ok(account.clone());
        }
    }
    let builder = || match &acme.ca_root {
        Some(root) => Account::builder_with_root(root),
        None => Account::builder(),
    };
    let acme_error = |step| move |source| AcmeError::acme(step, source);
    let path = store.account_path(&acme.directory);
    let account = match std::fs::read(&path) {
        Ok(json) => {
            let credentials: AccountCredentials =
                serde_json::from_slice(&json).map_err(AcmeError::BadAccount)?;
            builder()
                .map_err(acme_error("loading the account"))?
                .from_credentials(credentials)
                .await
                .map_err(acme_error("loading the account"))?
        }
        Err(_) => {
            let contact: Vec<&str> = acme.contact.iter().map(String::as_str).collect();
            let new_account = NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            };
            // A rejected nonce is retried like every other step (see `order`).
            let mut attempt = 1;
            let (account, credentials) = loop {
                let created = builder()
                    .map_err(acme_error("creating the account"))?
                    .create(&new_account, acme.directory.clone(), None)
                    .await;
                match created {
                    Err(error)
                        if order::is_bad_nonce(&error) && attempt < order::BAD_NONCE_ATTEMPTS =>
                    {
                        attempt += 1;
                    }
                    other => break other.map_err(acme_error("creating the account"))?,
                }
            };
            let json = serde_json::to_vec(&credentials).map_err(AcmeError::BadAccount)?;
            store::write_atomically(&path, &json)?;
            tracing::info!(directory = %acme.directory, id = account.id(), "ACME account created");
            account
        }
    };
    *cached = Some((acme.directory.clone(), account.clone()));
    Ok(account)
}
