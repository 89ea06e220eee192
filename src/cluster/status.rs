//! What `headland cluster status` and `GET /cluster` show: every live node as etcd holds it
//! (`nodes/`, `health/`, `status/`), read fresh from etcd.

use std::collections::BTreeMap;

use serde::Serialize;

use super::health::NodeReport;
use super::service::{NodeStatus, STATUS};
use super::{Cluster, ClusterError};

/// One live node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub node: String,
    pub region: Option<String>,
    /// Whether it can serve its region (`health/`); `None` before its first report.
    pub ready: Option<bool>,
    pub probes: BTreeMap<String, bool>,
    pub status: Option<NodeStatus>,
}

/// Every node with a lease now, by name.
pub async fn read(cluster: &Cluster) -> Result<Vec<NodeView>, ClusterError> {
    let (nodes, _) = cluster.list("nodes/").await?;
    let (health, _) = cluster.list("health/").await?;
    let (status, _) = cluster.list(STATUS).await?;
    let by_node = |items: &[super::Stored], prefix: &str| -> BTreeMap<String, Vec<u8>> {
        items
            .iter()
            .filter_map(|s| {
                let node = cluster.path(&s.key)?.strip_prefix(prefix)?;
                Some((node.to_owned(), s.value.clone()))
            })
            .collect()
    };
    let health = by_node(&health, "health/");
    let status = by_node(&status, STATUS);
    let mut views: Vec<NodeView> = by_node(&nodes, "nodes/")
        .into_iter()
        .map(|(node, registration)| {
            let registration: serde_json::Value =
                serde_json::from_slice(&registration).unwrap_or_default();
            let report = health
                .get(&node)
                .and_then(|json| serde_json::from_slice::<NodeReport>(json).ok());
            NodeView {
                region: registration["region"].as_str().map(str::to_owned),
                ready: report.as_ref().map(|r| r.ready),
                probes: report.map(|r| r.probes).unwrap_or_default(),
                status: status
                    .get(&node)
                    .and_then(|json| serde_json::from_slice(json).ok()),
                node,
            }
        })
        .collect();
    views.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(views)
}

/// A table for the terminal, one node per line.
pub fn table(views: &[NodeView]) -> String {
    let mut out =
        String::from("NODE\tREGION\tREADY\tGENERATION\tSHARED CONFIG\tCERTIFICATES\tLAST ERROR\n");
    for view in views {
        let status = view.status.as_ref();
        let shared = status
            .and_then(|s| s.shared_sha256.as_deref())
            .map_or("-".to_owned(), |sha| sha.chars().take(12).collect());
        let certificates = status.map_or("-".to_owned(), |s| {
            let valid = s.certificates.iter().filter(|c| c.state == "valid").count();
            format!("{valid}/{} valid", s.certificates.len())
        });
        let error = status
            .and_then(|s| s.last_error.as_deref())
            .and_then(|e| e.lines().next())
            .unwrap_or("-");
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{shared}\t{certificates}\t{error}\n",
            view.node,
            view.region.as_deref().unwrap_or("-"),
            view.ready.map_or("-", |r| if r { "yes" } else { "no" }),
            status.map_or("-".to_owned(), |s| s.generation.to_string()),
        ));
    }
    out
}
