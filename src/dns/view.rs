//! `DnsView`: one immutable generation of everything the DNS server answers from (zones,
//! geo names with their resolved regions, the GeoIP database), built and checked off the
//! query path and shared as `Arc<DnsView>`.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::rr::{Name, RecordType};

use crate::dns::error::DnsError;
use crate::dns::geoip::GeoDb;
use crate::dns::spec::{GeoNameSpec, GeoPolicy, RegionSpec, ZoneSpec};
use crate::dns::zone::{lowercase_fqdn, Zone};

/// A geo name with its regions resolved, in configured order.
#[derive(Debug, Clone)]
pub struct GeoName {
    /// Fully qualified, lowercase owner.
    pub name: Name,
    /// The owner without the trailing dot, as reported in `QueryOutcome::geo`.
    pub label: String,
    /// The regions, in the configured default order.
    pub regions: Vec<RegionSpec>,
    /// TTL of the A/AAAA answers.
    pub ttl: u32,
    /// Selection policy.
    pub policy: GeoPolicy,
    /// Answer with all regions when all are down.
    pub fail_open: bool,
}

/// One zone and its geo names.
#[derive(Debug, Clone)]
pub struct ZoneView {
    /// The static records.
    pub zone: Zone,
    /// The origin without the trailing dot, as reported in `QueryOutcome::zone`.
    pub label: String,
    /// Geo names by lowercase owner.
    pub geo: HashMap<Name, GeoName>,
}

/// Everything a query is answered from. Immutable; a reload builds a new one.
#[derive(Debug, Default, Clone)]
pub struct DnsView {
    /// Zones, most specific (most labels) first, so the first match is the longest.
    zones: Vec<ZoneView>,
    geoip: Option<Arc<GeoDb>>,
}

// === impl DnsView ===

impl DnsView {
    /// Loads every zone file, resolves geo names to regions and checks the result.
    ///
    /// Returns every error found, not just the first.
    pub fn build(
        zones: &[ZoneSpec],
        regions: &[RegionSpec],
        geoip: Option<Arc<GeoDb>>,
    ) -> Result<DnsView, Vec<DnsError>> {
        let mut errors = Vec::new();
        let region_index = index_regions(regions, &mut errors);
        let mut origins = HashSet::new();
        let mut views = Vec::new();
        for spec in zones {
            let Some(origin) = parse_origin(&spec.origin, &mut errors) else {
                continue;
            };
            if !origins.insert(origin.clone()) {
                errors.push(DnsError::DuplicateZone {
                    origin: spec.origin.clone(),
                });
                continue;
            }
            match Zone::load(&origin, &spec.file) {
                Ok(zone) => views.push(build_zone_view(zone, spec, &region_index, &mut errors)),
                Err(zone_errors) => errors.extend(zone_errors.into_iter().map(DnsError::Zone)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        views.sort_by_key(|view| std::cmp::Reverse(view.zone.origin().num_labels()));
        Ok(DnsView {
            zones: views,
            geoip,
        })
    }

    /// The zone with the longest origin that contains `name` (lowercase).
    pub fn find_zone(&self, name: &Name) -> Option<&ZoneView> {
        self.zones
            .iter()
            .find(|view| view.zone.origin().zone_of(name))
    }

    /// A copy of this view with TXT records added (ACME DNS-01 answers: `(name, values)`,
    /// names lowercase and fully qualified); names outside every zone are skipped.
    pub fn with_txt(&self, records: &[(Name, Vec<String>)], ttl: u32) -> DnsView {
        let mut view = self.clone();
        for (name, values) in records {
            if let Some(zone) = view
                .zones
                .iter_mut()
                .find(|z| z.zone.origin().zone_of(name))
            {
                zone.zone.insert_txt(name, values, ttl);
            }
        }
        view
    }

    /// The GeoIP database, if one is configured.
    pub fn geoip(&self) -> Option<&GeoDb> {
        self.geoip.as_deref()
    }

    /// The zones served, most specific first.
    pub fn zones(&self) -> &[ZoneView] {
        &self.zones
    }
}

/// A name for messages and metric labels: no trailing dot, root shown as ".".
pub(crate) fn display_name(name: &Name) -> String {
    let text = name.to_string();
    match text.strip_suffix('.') {
        Some("") | None => text,
        Some(stripped) => stripped.to_string(),
    }
}

fn index_regions<'a>(
    regions: &'a [RegionSpec],
    errors: &mut Vec<DnsError>,
) -> HashMap<&'a str, &'a RegionSpec> {
    let mut index = HashMap::new();
    for region in regions {
        if index.insert(region.name.as_str(), region).is_some() {
            errors.push(DnsError::DuplicateRegion {
                name: region.name.clone(),
            });
        }
    }
    index
}

fn parse_origin(origin: &str, errors: &mut Vec<DnsError>) -> Option<Name> {
    let text = origin.trim();
    let fqdn = if text.ends_with('.') {
        text.to_string()
    } else {
        format!("{text}.")
    };
    match Name::from_str(&fqdn) {
        Ok(name) if !text.is_empty() => Some(lowercase_fqdn(&name)),
        Ok(_) => {
            errors.push(DnsError::InvalidOrigin {
                origin: origin.into(),
                message: "empty name".into(),
            });
            None
        }
        Err(error) => {
            errors.push(DnsError::InvalidOrigin {
                origin: origin.into(),
                message: error.to_string(),
            });
            None
        }
    }
}

fn build_zone_view(
    mut zone: Zone,
    spec: &ZoneSpec,
    regions: &HashMap<&str, &RegionSpec>,
    errors: &mut Vec<DnsError>,
) -> ZoneView {
    let label = display_name(zone.origin());
    let mut geo = HashMap::new();
    for geo_spec in &spec.geo {
        let Some(name) = geo_owner(&zone, &label, geo_spec, errors) else {
            continue;
        };
        let Some(geo_name) = resolve_geo(&zone, name, geo_spec, regions, errors) else {
            continue;
        };
        if geo.contains_key(&geo_name.name) {
            errors.push(DnsError::DuplicateGeoName {
                name: geo_name.label.clone(),
            });
            continue;
        }
        zone.insert_name(&geo_name.name);
        geo.insert(geo_name.name.clone(), geo_name);
    }
    ZoneView { zone, label, geo }
}

/// The owner of a geo name: its label joined to the origin ("@" is the apex).
fn geo_owner(
    zone: &Zone,
    zone_label: &str,
    spec: &GeoNameSpec,
    errors: &mut Vec<DnsError>,
) -> Option<Name> {
    let label = spec.label.trim();
    let invalid = |message: String| DnsError::InvalidGeoLabel {
        zone: zone_label.into(),
        label: spec.label.clone(),
        message,
    };
    if label == "@" {
        return Some(zone.origin().clone());
    }
    if label.is_empty() || label.ends_with('.') {
        errors.push(invalid(
            "use a label relative to the zone, or \"@\" for the apex".into(),
        ));
        return None;
    }
    match Name::from_str(label).and_then(|relative| relative.append_domain(zone.origin())) {
        Ok(name) => Some(lowercase_fqdn(&name)),
        Err(error) => {
            errors.push(invalid(error.to_string()));
            None
        }
    }
}

/// Resolves region names and checks that the owner does not contradict the zone file.
fn resolve_geo(
    zone: &Zone,
    name: Name,
    spec: &GeoNameSpec,
    regions: &HashMap<&str, &RegionSpec>,
    errors: &mut Vec<DnsError>,
) -> Option<GeoName> {
    let label = display_name(&name);
    let before = errors.len();
    if spec.regions.is_empty() {
        errors.push(DnsError::NoRegions {
            name: label.clone(),
        });
    }
    let mut resolved = Vec::new();
    for region in &spec.regions {
        match regions.get(region.as_str()) {
            Some(found) => resolved.push((*found).clone()),
            None => errors.push(DnsError::UnknownRegion {
                name: label.clone(),
                region: region.clone(),
                hint: suggestion(region, regions.keys().copied()),
            }),
        }
    }
    check_collisions(zone, &name, &label, errors);
    (errors.len() == before).then_some(GeoName {
        name,
        label,
        regions: resolved,
        ttl: spec.ttl,
        policy: spec.policy,
        fail_open: spec.fail_open,
    })
}

/// A geo owner may carry other data (an apex keeps its SOA, NS, MX), but not a CNAME
/// (RFC 1034 section 3.6.2), not static A/AAAA records (which answer would win would be a
/// guess), and not a name below a delegation (the child zone owns it).
fn check_collisions(zone: &Zone, name: &Name, label: &str, errors: &mut Vec<DnsError>) {
    let collide = |what: String| DnsError::GeoCollision {
        name: label.into(),
        what,
        path: zone.path().to_path_buf(),
    };
    if let Some(types) = zone.rrsets_at(name) {
        let clashing: Vec<String> = [RecordType::CNAME, RecordType::A, RecordType::AAAA]
            .into_iter()
            .filter(|rtype| types.contains_key(rtype))
            .map(|rtype| rtype.to_string())
            .collect();
        if !clashing.is_empty() {
            errors.push(collide(format!("static {} records", clashing.join("/"))));
        }
    }
    if let Some(cut) = zone.delegation_for(name) {
        errors.push(collide(format!("the delegation to {cut}")));
    }
}

/// ", did you mean \"x\"?" for a near miss, else "".
fn suggestion<'a>(wanted: &str, known: impl Iterator<Item = &'a str>) -> String {
    known
        .filter(|k| edit_distance(wanted, k) <= 2)
        .min_by_key(|k| edit_distance(wanted, k))
        .map(|k| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::policy::tests::region;
    use std::path::PathBuf;

    fn testdata(file: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("config/zones/tests")
            .join(file)
    }

    fn geo(label: &str, regions: &[&str]) -> GeoNameSpec {
        GeoNameSpec {
            label: label.into(),
            regions: regions.iter().map(|r| r.to_string()).collect(),
            ttl: 30,
            policy: GeoPolicy::Nearest,
            fail_open: true,
        }
    }

    fn regions() -> Vec<RegionSpec> {
        vec![
            region("apac", 3.139, 101.69, "MY", "AS"),
            region("na", 39.0, -77.5, "US", "NA"),
        ]
    }

    #[test]
    fn builds_and_finds_longest_zone() {
        let zones = vec![
            ZoneSpec {
                origin: "example.com".into(),
                file: testdata("example.com.zone"),
                geo: vec![geo("api", &["apac", "na"]), geo("@", &["na"])],
            },
            ZoneSpec {
                origin: "Sub.Example.com.".into(),
                file: testdata("sub.example.com.zone"),
                geo: vec![],
            },
        ];
        let view = DnsView::build(&zones, &regions(), None).unwrap();
        let name = Name::from_str("a.sub.example.com.").unwrap();
        assert_eq!(view.find_zone(&name).unwrap().label, "sub.example.com");
        let api = Name::from_str("api.example.com.").unwrap();
        let zone = view.find_zone(&api).unwrap();
        assert_eq!(zone.label, "example.com");
        assert_eq!(zone.geo.len(), 2);
        assert!(view
            .find_zone(&Name::from_str("example.org.").unwrap())
            .is_none());
    }

    #[test]
    fn reports_every_error() {
        let zones = vec![
            ZoneSpec {
                origin: "example.com".into(),
                file: testdata("example.com.zone"),
                geo: vec![
                    geo("api", &["apac", "nax"]),
                    geo("alias", &["na"]),
                    geo("static", &["na"]),
                    geo("x", &[]),
                ],
            },
            ZoneSpec {
                origin: "missing.example".into(),
                file: testdata("nope.zone"),
                geo: vec![],
            },
            ZoneSpec {
                origin: "example.com.".into(),
                file: testdata("example.com.zone"),
                geo: vec![],
            },
        ];
        let errors = DnsView::build(&zones, &regions(), None).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(
            has("geo name api.example.com names unknown region \"nax\" (did you mean \"na\"?)"),
            "{text:#?}"
        );
        assert!(
            has("geo name alias.example.com collides with static CNAME records"),
            "{text:#?}"
        );
        assert!(
            has("geo name static.example.com collides with static A/AAAA records"),
            "{text:#?}"
        );
        assert!(has("geo name x.example.com lists no regions"), "{text:#?}");
        assert!(has("nope.zone: cannot read zone file"), "{text:#?}");
        assert!(
            has("zone \"example.com.\" is configured twice"),
            "{text:#?}"
        );
        assert_eq!(errors.len(), 6, "{text:#?}");
    }

    #[test]
    fn display_name_strips_dot() {
        assert_eq!(display_name(&Name::from_str("a.b.").unwrap()), "a.b");
        assert_eq!(display_name(&Name::root()), ".");
    }
}
