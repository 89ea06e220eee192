//! One ACME order from start to certificate (RFC 8555 §7.4): place it, answer each
//! authorization's HTTP-01 challenge from memory, finalize with a key made here, download.

use std::collections::HashSet;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeStatus, ChallengeType,
    Identifier, NewOrder, Order, OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};

use super::shared::{ChallengeKey, SharedChallenges};
use super::AcmeError;
use crate::config::AcmeChallenge;

/// How long to wait for the CA to validate or to issue before calling the attempt failed.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(500))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

/// instant-acme retries a rejected nonce three times; a CA rejecting many nonces (pebble's
/// `PEBBLE_WFE_NONCEREJECT`, a busy Let's Encrypt) needs more. A bad nonce means the request
/// was not processed, so repeating it is safe.
pub(super) const BAD_NONCE_ATTEMPTS: u32 = 8;

macro_rules! retry_bad_nonce {
    ($step:expr) => {{
        let mut attempt = 1;
        loop {
            match $step {
                Err(error) if is_bad_nonce(&error) && attempt < BAD_NONCE_ATTEMPTS => attempt += 1,
                other => break other,
            }
        }
    }};
}

/// A freshly issued certificate, PEM.
#[derive(Debug)]
pub struct Issued {
    pub key_pem: String,
    pub chain_pem: String,
}

/// Where challenge answers are published: the proxy (HTTP-01) or the DNS server (DNS-01).
#[derive(Clone, Copy)]
pub struct Publish<'a> {
    pub kind: AcmeChallenge,
    pub acme: &'a super::Acme,
}

/// Removes the challenge answers it was given when the attempt ends, however it ends.
struct PublishedTokens<'a> {
    to: Publish<'a>,
    published: Vec<(ChallengeKey, String)>,
}

/// Obtains a certificate for `names`. `replaces` names the certificate this one renews, so
/// that a CA with ARI treats it as a renewal (exempt from rate limits). In a cluster,
/// `shared` puts each challenge answer in etcd too, for the nodes the CA may reach instead.
pub async fn obtain(
    account: &Account,
    names: &[String],
    replaces: Option<CertificateIdentifier<'static>>,
    to: Publish<'_>,
    mut shared: Option<&mut SharedChallenges<'_>>,
) -> Result<Issued, AcmeError> {
    let identifiers: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
    let mut order = place(account, &identifiers, replaces).await?;
    let mut published = PublishedTokens {
        to,
        published: Vec::new(),
    };
    let mut reported = HashSet::new();
    retry_bad_nonce!(
        answer_challenges(
            &mut order,
            &mut published,
            &mut reported,
            shared.as_deref_mut()
        )
        .await
    )
    .map_err(|e| AcmeError::acme("answering challenges", e))?;
    let status = retry_bad_nonce!(order.poll_ready(&POLL).await)
        .map_err(|e| AcmeError::acme("waiting for validation", e))?;
    if status != OrderStatus::Ready {
        return Err(AcmeError::Rejected(validation_errors(&mut order).await));
    }
    drop(published);

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AcmeError::Key(e.to_string()))?;
    let mut params =
        CertificateParams::new(names.to_vec()).map_err(|e| AcmeError::Key(e.to_string()))?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| AcmeError::Key(e.to_string()))?;
    retry_bad_nonce!(order.finalize_csr(csr.der()).await)
        .map_err(|e| AcmeError::acme("finalizing", e))?;
    let chain_pem = retry_bad_nonce!(order.poll_certificate(&POLL).await)
        .map_err(|e| AcmeError::acme("downloading the certificate", e))?;
    Ok(Issued {
        key_pem: key.serialize_pem(),
        chain_pem,
    })
}

async fn place(
    account: &Account,
    identifiers: &[Identifier],
    replaces: Option<CertificateIdentifier<'static>>,
) -> Result<Order, AcmeError> {
    if let Some(replaces) = replaces {
        let new_order = NewOrder::new(identifiers).replaces(replaces);
        match retry_bad_nonce!(account.new_order(&new_order).await) {
            // A CA without ARI: an ordinary order will do. `alreadyReplaced`: an earlier
            // renewal of this certificate was issued but never stored (crash, full disk);
            // asking to replace it again would fail forever (RFC 9773 §5).
            Err(instant_acme::Error::Unsupported(_)) => {}
            Err(instant_acme::Error::Api(problem))
                if problem.r#type.as_deref()
                    == Some("urn:ietf:params:acme:error:alreadyReplaced") => {}
            other => return other.map_err(|e| AcmeError::acme("placing the order", e)),
        }
    }
    retry_bad_nonce!(account.new_order(&NewOrder::new(identifiers)).await)
        .map_err(|e| AcmeError::acme("placing the order", e))
}

/// Publishes each pending authorization's challenge answer and tells the CA to validate it.
/// Safe to run again after a failure: authorizations already fetched are not fetched again,
/// and challenges in `reported` (already told to the CA, whose cached state still says
/// pending) are skipped.
async fn answer_challenges(
    order: &mut Order,
    published: &mut PublishedTokens<'_>,
    reported: &mut HashSet<String>,
    mut shared: Option<&mut SharedChallenges<'_>>,
) -> Result<(), instant_acme::Error> {
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(instant_acme::Error::Other(
                    format!("authorization is {other:?}").into(),
                ))
            }
        }
        let kind = published.to.kind;
        // `*.example.com` is validated at `_acme-challenge.example.com` (RFC 8555 §8.4).
        let name = authorization.identifier().to_string();
        let challenge_type = match kind {
            AcmeChallenge::Http01 => ChallengeType::Http01,
            AcmeChallenge::Dns01 => ChallengeType::Dns01,
        };
        let Some(mut challenge) = authorization.challenge(challenge_type) else {
            return Err(instant_acme::Error::Str(
                "the CA does not offer the configured challenge type",
            ));
        };
        if challenge.status != ChallengeStatus::Pending || reported.contains(&challenge.url) {
            continue;
        }
        let key_authorization = challenge.key_authorization();
        let (key, value) = match kind {
            AcmeChallenge::Http01 => (
                ChallengeKey::Http01 {
                    token: challenge.token.clone(),
                },
                key_authorization.as_str().to_owned(),
            ),
            AcmeChallenge::Dns01 => (
                ChallengeKey::Dns01 {
                    name: format!("_acme-challenge.{}", name.trim_start_matches("*.")),
                },
                key_authorization.dns_value(),
            ),
        };
        published.add(&key, &value);
        if let Some(shared) = shared.as_deref_mut() {
            shared
                .publish(&key, &value)
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
        }
        challenge.set_ready().await?;
        reported.insert(challenge.url.clone());
    }
    Ok(())
}

/// Why validation failed, from each authorization's challenge errors.
async fn validation_errors(order: &mut Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let name = authorization.identifier().to_string();
        if let Ok(state) = authorization.refresh().await {
            for challenge in &state.challenges {
                if let Some(error) = &challenge.error {
                    reasons.push(format!("{name}: {error}"));
                }
            }
        }
    }
    if reasons.is_empty() {
        "the CA marked the order invalid".to_owned()
    } else {
        reasons.join("; ")
    }
}

pub(super) fn is_bad_nonce(error: &instant_acme::Error) -> bool {
    matches!(error, instant_acme::Error::Api(problem)
        if problem.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce"))
}

// === impl PublishedTokens ===

impl PublishedTokens<'_> {
    fn add(&mut self, key: &ChallengeKey, value: &str) {
        key.publish(value, self.to.acme);
        self.published.push((key.clone(), value.to_owned()));
    }
}

impl Drop for PublishedTokens<'_> {
    fn drop(&mut self) {
        for (key, value) in &self.published {
            key.withdraw(value, self.to.acme);
        }
    }
}
