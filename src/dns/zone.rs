//! One authoritative zone loaded from an RFC 1035 master file: its SOA, its RRsets by
//! lowercased owner name and type, and the set of names that exist in it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::Parser;

use crate::dns::error::ZoneError;

/// Most CNAME or SOA problems are reported by name; this bounds how many of them one zone
/// file reports so that a badly broken file does not flood `headland check`.
const MAX_ERRORS_PER_ZONE: usize = 20;

/// RRsets of one owner name, by type.
pub type RrsetsByType = BTreeMap<RecordType, Vec<Record>>;

/// An authoritative zone, immutable once loaded (a reload builds a new one).
#[derive(Debug, Clone)]
pub struct Zone {
    origin: Name,
    path: PathBuf,
    soa: Record,
    rrsets: HashMap<Name, RrsetsByType>,
    /// Every owner name plus every empty non-terminal between an owner and the origin, so
    /// that NODATA and NXDOMAIN can be told apart (RFC 8020 section 2).
    names: HashSet<Name>,
    /// Owners of NS RRsets below the apex: delegation points (RFC 1034 section 4.2.1).
    cuts: HashSet<Name>,
}

// === impl Zone ===

impl Zone {
    /// Reads and parses `path` as the zone for `origin`.
    ///
    /// Returns every problem found (parse errors stop at the first one, since the parser does).
    pub fn load(origin: &Name, path: &Path) -> Result<Zone, Vec<ZoneError>> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            vec![zone_error(
                path,
                None,
                format!("cannot read zone file: {error}"),
            )]
        })?;
        Self::parse(origin, path, &text)
    }

    /// Parses zone text as if read from `path` (which is used in errors and to resolve
    /// relative `$INCLUDE`s).
    pub fn parse(origin: &Name, path: &Path, text: &str) -> Result<Zone, Vec<ZoneError>> {
        let origin = lowercase_fqdn(origin);
        let parsed = Parser::new(text, Some(path.to_path_buf()), Some(origin.clone())).parse();
        let records = match parsed {
            Ok((_, records)) => records,
            Err(error) => {
                let message = error.to_string();
                let line = locate_parse_error(&origin, path, text, &message);
                return Err(vec![zone_error(path, line, message)]);
            }
        };
        let all = records
            .into_values()
            .flat_map(|set| set.records_without_rrsigs().cloned().collect::<Vec<_>>());
        Self::from_records(origin, path, all)
    }

    /// Builds a zone from records, checking the rules a zone file must follow.
    fn from_records(
        origin: Name,
        path: &Path,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<Zone, Vec<ZoneError>> {
        let mut errors = Vec::new();
        let mut rrsets: HashMap<Name, RrsetsByType> = HashMap::new();
        for mut record in records {
            record.name = lowercase_fqdn(&record.name);
            if let Err(message) = check_record(&origin, &record) {
                errors.push(zone_error(path, None, message));
                continue;
            }
            let by_type = rrsets.entry(record.name.clone()).or_default();
            by_type
                .entry(record.record_type())
                .or_default()
                .push(record);
        }
        check_cname_rules(&rrsets, &mut |message| {
            errors.push(zone_error(path, None, message))
        });
        let soa = apex_soa(&origin, &rrsets);
        if soa.is_none() {
            errors.push(zone_error(
                path,
                None,
                format!("no SOA record at the zone apex {origin}"),
            ));
        }
        match soa {
            Some(soa) if errors.is_empty() => Ok(Self::assemble(origin, path, soa, rrsets)),
            _ => {
                errors.truncate(MAX_ERRORS_PER_ZONE);
                Err(errors)
            }
        }
    }

    fn assemble(
        origin: Name,
        path: &Path,
        soa: Record,
        rrsets: HashMap<Name, RrsetsByType>,
    ) -> Zone {
        let cuts = rrsets
            .iter()
            .filter(|(name, types)| **name != origin && types.contains_key(&RecordType::NS))
            .map(|(name, _)| name.clone())
            .collect();
        let mut zone = Zone {
            origin,
            path: path.to_path_buf(),
            soa,
            rrsets: HashMap::new(),
            names: HashSet::new(),
            cuts,
        };
        for name in rrsets.keys() {
            zone.insert_name(name);
        }
        zone.rrsets = rrsets;
        zone
    }

    /// The zone's origin, lowercased and fully qualified.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The zone file this zone was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The apex SOA record.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// TTL for negative answers: min(SOA TTL, SOA MINIMUM) (RFC 2308 section 5).
    pub fn negative_ttl(&self) -> u32 {
        match &self.soa.data {
            RData::SOA(soa) => self.soa.ttl.min(soa.minimum),
            _ => self.soa.ttl,
        }
    }

    /// The SOA record as it goes into the authority section of a negative answer, with the
    /// negative TTL (RFC 2308 section 3).
    pub fn negative_soa(&self) -> Record {
        let mut soa = self.soa.clone();
        soa.ttl = self.negative_ttl();
        soa
    }

    /// The records of one RRset; `name` must be lowercase.
    pub fn rrset(&self, name: &Name, rtype: RecordType) -> Option<&[Record]> {
        self.rrsets
            .get(name)
            .and_then(|types| types.get(&rtype))
            .map(Vec::as_slice)
    }

    /// All RRsets at one owner name; `name` must be lowercase.
    pub fn rrsets_at(&self, name: &Name) -> Option<&RrsetsByType> {
        self.rrsets.get(name)
    }

    /// Whether `name` exists in the zone, including as an empty non-terminal.
    pub fn name_exists(&self, name: &Name) -> bool {
        self.names.contains(name)
    }

    /// The delegation point at or above `name` (below the apex), if `name` is not ours to
    /// answer authoritatively.
    pub fn delegation_for(&self, name: &Name) -> Option<&Name> {
        if self.cuts.is_empty() {
            return None;
        }
        let mut current = name.clone();
        while current.num_labels() > self.origin.num_labels() {
            if let Some(cut) = self.cuts.get(&current) {
                return Some(cut);
            }
            current = current.base_name();
        }
        None
    }

    /// The wildcard owner that answers `name` (RFC 4592 section 3.3.1): only for a name that
    /// does not exist, from `*.` plus its closest existing ancestor.
    pub fn wildcard_for(&self, name: &Name) -> Option<Name> {
        if self.names.contains(name) || !self.origin.zone_of(name) {
            return None;
        }
        let mut encloser = name.base_name();
        loop {
            if self.names.contains(&encloser) {
                let wildcard = encloser.prepend_label("*").ok()?;
                return self.names.contains(&wildcard).then_some(wildcard);
            }
            if encloser.num_labels() <= self.origin.num_labels() {
                return None;
            }
            encloser = encloser.base_name();
        }
    }

    /// Adds a TXT RRset at `name` (lowercase, inside the zone), replacing any there: ACME
    /// DNS-01 answers, which live in memory for the length of a validation.
    pub(crate) fn insert_txt(&mut self, name: &Name, values: &[String], ttl: u32) {
        let records = values
            .iter()
            .map(|value| {
                Record::from_rdata(name.clone(), ttl, RData::TXT(TXT::new(vec![value.clone()])))
            })
            .collect();
        self.rrsets
            .entry(name.clone())
            .or_default()
            .insert(RecordType::TXT, records);
        self.insert_name(name);
    }

    /// Records `name` (and its ancestors up to the origin) as existing; used for geo names,
    /// which live in the configuration rather than in the zone file.
    pub(crate) fn insert_name(&mut self, name: &Name) {
        let mut current = name.clone();
        while current.num_labels() >= self.origin.num_labels() && self.origin.zone_of(&current) {
            if !self.names.insert(current.clone()) {
                break;
            }
            if current.num_labels() == self.origin.num_labels() {
                break;
            }
            current = current.base_name();
        }
    }
}

/// Lowercases a name and marks it fully qualified, as all keys in a `Zone` are.
pub fn lowercase_fqdn(name: &Name) -> Name {
    let mut name = name.to_lowercase();
    name.set_fqdn(true);
    name
}

fn zone_error(path: &Path, line: Option<usize>, message: String) -> ZoneError {
    ZoneError {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// A record must be class IN, inside the zone, and an SOA must sit at the apex.
fn check_record(origin: &Name, record: &Record) -> Result<(), String> {
    let rtype = record.record_type();
    if record.dns_class != DNSClass::IN {
        return Err(format!(
            "record {} {rtype} has class {}, only IN is served",
            record.name, record.dns_class
        ));
    }
    if !origin.zone_of(&record.name) {
        return Err(format!(
            "record {} {rtype} is outside the zone origin {origin}",
            record.name
        ));
    }
    if rtype == RecordType::SOA && record.name != *origin {
        return Err(format!(
            "SOA record at {} is not at the zone apex {origin}",
            record.name
        ));
    }
    Ok(())
}

/// RFC 1034 section 3.6.2 and RFC 2181 section 10.1: a CNAME owner has no other data and
/// exactly one CNAME; the apex, which always has an SOA, can therefore have no CNAME.
fn check_cname_rules(rrsets: &HashMap<Name, RrsetsByType>, report: &mut dyn FnMut(String)) {
    let mut names: Vec<&Name> = rrsets.keys().collect();
    names.sort();
    for name in names {
        let Some(types) = rrsets.get(name) else {
            continue;
        };
        let Some(cnames) = types.get(&RecordType::CNAME) else {
            continue;
        };
        if cnames.len() > 1 {
            report(format!(
                "{name} has {} CNAME records, only one is allowed",
                cnames.len()
            ));
        }
        let others: Vec<String> = types
            .keys()
            .filter(|t| **t != RecordType::CNAME)
            .map(ToString::to_string)
            .collect();
        if !others.is_empty() {
            report(format!(
                "{name} has a CNAME and other data ({}) (RFC 1034 section 3.6.2)",
                others.join(", ")
            ));
        }
    }
}

fn apex_soa(origin: &Name, rrsets: &HashMap<Name, RrsetsByType>) -> Option<Record> {
    rrsets
        .get(origin)
        .and_then(|types| types.get(&RecordType::SOA))
        .and_then(|soas| soas.first())
        .cloned()
}

/// Finds the line of a parse error.
///
/// hickory's zone parser reports no positions, but it stops at the first bad record, so the
/// shortest prefix of whole lines that fails with the same message ends at the bad record.
/// Prefixes shorter than that either parse or fail differently (e.g. an unclosed `(`), which
/// makes "fails with the same message" monotonic enough for a binary search.
fn locate_parse_error(origin: &Name, path: &Path, text: &str, message: &str) -> Option<usize> {
    let ends: Vec<usize> = text
        .char_indices()
        .filter(|(_, c)| *c == '\n')
        .map(|(i, _)| i + 1)
        .chain(std::iter::once(text.len()))
        .collect();
    let fails_same = |lines: usize| -> bool {
        let end = ends
            .get(lines.saturating_sub(1))
            .copied()
            .unwrap_or(text.len());
        let prefix = text.get(..end).unwrap_or(text);
        Parser::new(prefix, Some(path.to_path_buf()), Some(origin.clone()))
            .parse()
            .is_err_and(|e| e.to_string() == message)
    };
    let (mut low, mut high) = (1, ends.len());
    if !fails_same(high) {
        return None;
    }
    while low < high {
        let mid = low + (high - low) / 2;
        if fails_same(mid) {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    Some(low)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn origin() -> Name {
        Name::from_str("Example.COM.").unwrap()
    }

    fn parse(text: &str) -> Result<Zone, Vec<ZoneError>> {
        Zone::parse(&origin(), Path::new("zones/example.com.zone"), text)
    }

    const GOOD: &str = "$TTL 300
@ 3600 IN SOA ns1.example.com. hostmaster.example.com. ( 1 7200 900 1209600 60 )
@ IN NS ns1
ns1 IN A 192.0.2.53
www IN CNAME web.deep
web.deep IN AAAA 2001:db8::1
@ IN MX 10 mail
@ IN TXT \"v=spf1 -all\"
@ IN CAA 0 issue \"letsencrypt.org\"
_sip._tcp IN SRV 10 5 5060 sip
Sub IN NS ns.sub
ns.sub IN A 192.0.2.54
";

    #[test]
    fn loads_all_required_types() {
        let zone = parse(GOOD).unwrap();
        assert_eq!(zone.origin().to_string(), "example.com.");
        let name = |s: &str| Name::from_str(s).unwrap();
        for (owner, rtype) in [
            ("example.com.", RecordType::SOA),
            ("example.com.", RecordType::NS),
            ("ns1.example.com.", RecordType::A),
            ("www.example.com.", RecordType::CNAME),
            ("web.deep.example.com.", RecordType::AAAA),
            ("example.com.", RecordType::MX),
            ("example.com.", RecordType::TXT),
            ("example.com.", RecordType::CAA),
            ("_sip._tcp.example.com.", RecordType::SRV),
        ] {
            assert!(zone.rrset(&name(owner), rtype).is_some(), "{owner} {rtype}");
        }
        assert_eq!(zone.negative_ttl(), 60);
        assert!(
            zone.name_exists(&name("deep.example.com.")),
            "empty non-terminal"
        );
        assert!(!zone.name_exists(&name("nope.example.com.")));
        assert_eq!(
            zone.delegation_for(&name("a.ns.sub.example.com.")),
            Some(&name("sub.example.com."))
        );
        assert_eq!(zone.delegation_for(&name("www.example.com.")), None);
    }

    #[test]
    fn missing_soa_is_an_error() {
        let errors = parse("$TTL 60\n@ IN NS ns1\nns1 IN A 192.0.2.1\n").unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "zones/example.com.zone: no SOA record at the zone apex example.com."
        );
    }

    #[test]
    fn parse_error_has_line_number() {
        let text = format!("{GOOD}bad IN A 300.1.2.3\nok IN A 192.0.2.9\n");
        let errors = parse(&text).unwrap_err();
        assert_eq!(errors[0].line, Some(13), "{}", errors[0]);
        assert!(errors[0]
            .to_string()
            .starts_with("zones/example.com.zone:13: "));
    }

    #[test]
    fn parse_error_inside_parentheses_points_at_record_end() {
        let text = "$TTL 60\n@ IN SOA ns1 host (\n 1 2 3 4\n x )\n";
        let errors = parse(text).unwrap_err();
        assert_eq!(errors[0].line, Some(4), "{}", errors[0]);
    }

    #[test]
    fn cname_with_other_data_and_out_of_zone_records_are_named() {
        let text = format!("{GOOD}www IN A 192.0.2.1\nother.org. IN A 192.0.2.2\n");
        let errors = parse(&text).unwrap_err();
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            all.iter()
                .any(|e| e.contains("www.example.com. has a CNAME and other data")),
            "{all:?}"
        );
        assert!(
            all.iter()
                .any(|e| e.contains("other.org. A is outside the zone")),
            "{all:?}"
        );
    }

    #[test]
    fn unreadable_file_is_reported() {
        let errors = Zone::load(&origin(), Path::new("/nonexistent/zone")).unwrap_err();
        assert!(errors[0]
            .to_string()
            .starts_with("/nonexistent/zone: cannot read zone file"));
    }
}
