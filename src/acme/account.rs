//! The ACME account: loaded from `state_dir` when this CA already knows us, created (and
//! stored, mode 0600) otherwise. One account per directory URL. In a cluster the account
//! lives in etcd (sealed), shared by every node; `state_dir` keeps a copy.

use instant_acme::{Account, AccountCredentials, NewAccount};

use super::store::{self, CertStore};
use super::{order, shared, AcmeError};
use crate::cluster::Cluster;
use crate::config::AcmeConfig;

/// The account for this directory: the stored one, else a new one (stored 0600).
pub(super) async fn ensure_account(
    cached: &mut Option<(String, Account)>,
    acme: &AcmeConfig,
    store: &CertStore,
    cluster: Option<&Cluster>,
) -> Result<Account, AcmeError> {
    if let Some((directory, account)) = cached {
        if *directory == acme.directory {
            return Ok(account.clone());
        }
    }
    let path = store.account_path(&acme.directory);
    let stored = match cluster {
        // The cluster's account wins over a local one (made before the node joined).
        Some(cluster) => shared::load_account(cluster, &acme.directory).await?,
        None => std::fs::read(&path).ok(),
    };
    let account = match stored {
        Some(json) => {
            if cluster.is_some() {
                store::write_atomically(&path, &json)?;
            }
            load(acme, &json).await?
        }
        None => {
            let contact: Vec<&str> = acme.contact.iter().map(String::as_str).collect();
            let new_account = NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            };
            // A rejected nonce is retried like every other step (see `order`).
            let mut attempt = 1;
            let (account, credentials) = loop {
                let created = builder(acme)
                    .map_err(|e| AcmeError::acme("creating the account", e))?
                    .create(&new_account, acme.directory.clone(), None)
                    .await;
                match created {
                    Err(error)
                        if order::is_bad_nonce(&error) && attempt < order::BAD_NONCE_ATTEMPTS =>
                    {
                        attempt += 1;
                    }
                    other => {
                        break other.map_err(|e| AcmeError::acme("creating the account", e))?
                    }
                }
            };
            let json = serde_json::to_vec(&credentials).map_err(AcmeError::BadAccount)?;
            let first = match cluster {
                Some(cluster) => shared::share_account(cluster, &acme.directory, &json).await?,
                None => None,
            };
            match first {
                // Another node shared its account first: use that one.
                Some(theirs) => {
                    store::write_atomically(&path, &theirs)?;
                    load(acme, &theirs).await?
                }
                None => {
                    store::write_atomically(&path, &json)?;
                    tracing::info!(directory = %acme.directory, id = account.id(), "ACME account created");
                    account
                }
            }
        }
    };
    *cached = Some((acme.directory.clone(), account.clone()));
    Ok(account)
}

fn builder(acme: &AcmeConfig) -> Result<instant_acme::AccountBuilder, instant_acme::Error> {
    match &acme.ca_root {
        Some(root) => Account::builder_with_root(root),
        None => Account::builder(),
    }
}

/// The account behind stored credentials (JSON, as instant-acme writes them).
async fn load(acme: &AcmeConfig, json: &[u8]) -> Result<Account, AcmeError> {
    let credentials: AccountCredentials =
        serde_json::from_slice(json).map_err(AcmeError::BadAccount)?;
    builder(acme)
        .map_err(|e| AcmeError::acme("loading the account", e))?
        .from_credentials(credentials)
        .await
        .map_err(|e| AcmeError::acme("loading the account", e))
}
