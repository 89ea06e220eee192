//! Region selection for geo names: health filter, fail-open, then the nearest or weighted pick.

use rand::Rng;

use crate::dns::geoip::GeoHit;
use crate::dns::spec::{GeoPolicy, RegionSpec};

/// Mean Earth radius in kilometres (IUGG), for the haversine distance.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// The outcome of a selection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Selection<'a> {
    /// Answer with this region's addresses.
    Region(&'a RegionSpec),
    /// Every region is down and the name fails open: answer with every region's addresses.
    /// Health data that condemns every region at once more likely reflects a problem of the
    /// prober than of all regions, so handing out everything beats handing out nothing.
    AllDown(&'a [RegionSpec]),
    /// Every region is down and the name fails closed: the caller answers NODATA (the name
    /// exists, it has no usable address now), with the zone SOA so resolvers cache the
    /// emptiness only for the negative TTL (RFC 2308 section 5).
    Nothing,
}

/// Picks the region that answers a geo name, using the thread's random generator for
/// `GeoPolicy::Weighted`.
pub fn choose<'a>(
    regions: &'a [RegionSpec],
    policy: GeoPolicy,
    fail_open: bool,
    client: Option<&GeoHit>,
    healthy: &dyn Fn(&str) -> bool,
) -> Selection<'a> {
    choose_with(
        regions,
        policy,
        fail_open,
        client,
        healthy,
        &mut rand::rng(),
    )
}

/// `choose` with an explicit random generator (for tests).
pub fn choose_with<'a, R: Rng + ?Sized>(
    regions: &'a [RegionSpec],
    policy: GeoPolicy,
    fail_open: bool,
    client: Option<&GeoHit>,
    healthy: &dyn Fn(&str) -> bool,
    rng: &mut R,
) -> Selection<'a> {
    let candidates: Vec<&RegionSpec> = regions.iter().filter(|r| healthy(&r.name)).collect();
    if candidates.is_empty() {
        return match (fail_open, regions.is_empty()) {
            (true, false) => Selection::AllDown(regions),
            _ => Selection::Nothing,
        };
    }
    let picked = match policy {
        GeoPolicy::Nearest => nearest(&candidates, client),
        GeoPolicy::Weighted => weighted(&candidates, rng),
    };
    picked.map_or(Selection::Nothing, Selection::Region)
}

/// Country, then continent, then distance; the first candidate when nothing is known.
/// Candidates keep the configured order, so ties go to the region listed first.
fn nearest<'a>(candidates: &[&'a RegionSpec], client: Option<&GeoHit>) -> Option<&'a RegionSpec> {
    let first = candidates.first().copied();
    let Some(client) = client else { return first };
    let listed = |codes: &[String], code: &Option<String>| {
        code.as_deref()
            .is_some_and(|code| codes.iter().any(|c| c.eq_ignore_ascii_case(code)))
    };
    if let Some(region) = candidates
        .iter()
        .find(|r| listed(&r.countries, &client.country))
    {
        return Some(region);
    }
    if let Some(region) = candidates
        .iter()
        .find(|r| listed(&r.continents, &client.continent))
    {
        return Some(region);
    }
    let Some((lat, lon)) = client.location else {
        return first;
    };
    let mut best = first?;
    let mut best_km = f64::INFINITY;
    for region in candidates {
        let km = haversine_km((lat, lon), (region.lat, region.lon));
        // NaN (bad coordinates in config) never wins: it compares false.
        if km < best_km {
            best = region;
            best_km = km;
        }
    }
    Some(best)
}

/// Random pick proportional to weight; equal chances when every weight is zero.
fn weighted<'a, R: Rng + ?Sized>(
    candidates: &[&'a RegionSpec],
    rng: &mut R,
) -> Option<&'a RegionSpec> {
    let total: u64 = candidates.iter().map(|r| u64::from(r.weight)).sum();
    if total == 0 {
        if candidates.is_empty() {
            return None;
        }
        return candidates
            .get(rng.random_range(0..candidates.len()))
            .copied();
    }
    let mut ticket = rng.random_range(0..total);
    for region in candidates {
        let weight = u64::from(region.weight);
        if ticket < weight {
            return Some(region);
        }
        ticket -= weight;
    }
    candidates.last().copied()
}

/// Great-circle distance between two (lat, lon) points in degrees.
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    pub(crate) fn region(
        name: &str,
        lat: f64,
        lon: f64,
        country: &str,
        continent: &str,
    ) -> RegionSpec {
        RegionSpec {
            name: name.into(),
            v4: vec![],
            v6: vec![],
            lat,
            lon,
            countries: vec![country.into()],
            continents: vec![continent.into()],
            weight: 1,
        }
    }

    fn regions() -> Vec<RegionSpec> {
        vec![
            region("apac", 3.139, 101.69, "MY", "AS"),
            region("na", 39.0, -77.5, "US", "NA"),
            region("eu", 50.1, 8.7, "DE", "EU"),
        ]
    }

    fn hit(country: Option<&str>, continent: Option<&str>, location: Option<(f64, f64)>) -> GeoHit {
        GeoHit {
            country: country.map(Into::into),
            continent: continent.map(Into::into),
            location,
            prefix_len: 24,
        }
    }

    fn pick(client: Option<&GeoHit>, up: &dyn Fn(&str) -> bool) -> String {
        match choose(&regions(), GeoPolicy::Nearest, true, client, up) {
            Selection::Region(r) => r.name.clone(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn country_then_continent_then_distance() {
        let all = |_: &str| true;
        assert_eq!(
            pick(Some(&hit(Some("DE"), Some("NA"), None)), &all),
            "eu",
            "country first"
        );
        assert_eq!(pick(Some(&hit(Some("FR"), Some("EU"), None)), &all), "eu");
        assert_eq!(pick(Some(&hit(Some("JP"), Some("AS"), None)), &all), "apac");
        let sydney = hit(None, None, Some((-33.87, 151.21)));
        assert_eq!(pick(Some(&sydney), &all), "apac");
        let lisbon = hit(Some("PT"), Some("XX"), Some((38.7, -9.1)));
        assert_eq!(pick(Some(&lisbon), &all), "eu");
    }

    #[test]
    fn unknown_location_takes_first_healthy_in_order() {
        assert_eq!(pick(None, &|_| true), "apac");
        assert_eq!(pick(Some(&hit(None, None, None)), &|r| r != "apac"), "na");
    }

    #[test]
    fn down_region_is_skipped_for_the_next_nearest() {
        let berlin = hit(Some("DE"), Some("EU"), Some((52.5, 13.4)));
        assert_eq!(pick(Some(&berlin), &|r| r != "eu"), "na");
    }

    #[test]
    fn all_down_fails_open_or_closed() {
        let rs = regions();
        let none = |_: &str| false;
        assert!(matches!(
            choose(&rs, GeoPolicy::Nearest, true, None, &none),
            Selection::AllDown(all) if all.len() == 3
        ));
        assert_eq!(
            choose(&rs, GeoPolicy::Nearest, false, None, &none),
            Selection::Nothing
        );
        assert_eq!(
            choose(&[], GeoPolicy::Nearest, true, None, &none),
            Selection::Nothing
        );
    }

    #[test]
    fn weighted_follows_weights() {
        let mut rs = regions();
        rs[0].weight = 0;
        rs[1].weight = 3;
        rs[2].weight = 1;
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0u32; 3];
        for _ in 0..4000 {
            match choose_with(&rs, GeoPolicy::Weighted, false, None, &|_| true, &mut rng) {
                Selection::Region(r) => counts[rs.iter().position(|x| x == r).unwrap()] += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(counts[0], 0);
        assert!(counts[1] > 2 * counts[2], "{counts:?}");
    }

    #[test]
    fn haversine_known_distance() {
        // Frankfurt to Ashburn is about 6,600 km.
        let km = haversine_km((50.1, 8.7), (39.0, -77.5));
        assert!((6500.0..6700.0).contains(&km), "{km}");
    }

    fn arb_hit() -> impl Strategy<Value = Option<GeoHit>> {
        let code = proptest::option::of(prop::sample::select(vec!["MY", "US", "DE", "FR", "JP"]));
        let cont = proptest::option::of(prop::sample::select(vec!["AS", "NA", "EU", "OC"]));
        let loc = proptest::option::of((-90.0f64..90.0, -180.0f64..180.0));
        proptest::option::of((code, cont, loc).prop_map(|(c, k, l)| hit(c, k, l)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn chosen_region_is_healthy_when_any_is(
            up in proptest::collection::vec(any::<bool>(), 3),
            client in arb_hit(),
            weighted in any::<bool>(),
            fail_open in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let rs = regions();
            let healthy = |name: &str| rs.iter().position(|r| r.name == name).is_some_and(|i| up[i]);
            let policy = if weighted { GeoPolicy::Weighted } else { GeoPolicy::Nearest };
            let mut rng = StdRng::seed_from_u64(seed);
            let selection = choose_with(&rs, policy, fail_open, client.as_ref(), &healthy, &mut rng);
            if up.iter().any(|u| *u) {
                match selection {
                    Selection::Region(r) => prop_assert!(healthy(&r.name)),
                    other => prop_assert!(false, "expected a region, got {:?}", other),
                }
            } else if fail_open {
                prop_assert!(matches!(selection, Selection::AllDown(_)));
            } else {
                prop_assert_eq!(selection, Selection::Nothing);
            }
        }
    }
}
