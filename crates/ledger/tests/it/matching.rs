use cairn_ledger::{Ledger, TxError, testing};
use cairn_primitives::{
    Address, Amount, BoundedString, Delegation, Device, DeviceSpec, Globals, JobSpec,
    OpenDeployment, Resources, StateKey, StateValue, sha256,
};
use proptest::prelude::*;

const REGIONS: [&str; 3] = ["a", "b", "c"];

/// A ledger holding `fleet` devices: (class id, region, price, reputation, cores, leased).
fn fleet_ledger(fleet: &[(u16, usize, u64, u32, u32, bool)]) -> (Ledger, Vec<Address>) {
    let genesis = testing::genesis(&[]);
    let params = genesis.validate().unwrap();
    let mut recs = Vec::new();
    let mut addrs = Vec::new();
    let mut staked = 0;
    for (i, (class, region, price, rep, cores, leased)) in fleet.iter().enumerate() {
        let a = Address(sha256(&[&(i as u64).to_be_bytes()]).0);
        addrs.push(a);
        let c = &params.classes[*class as usize];
        let gpu = c.kind == cairn_primitives::ClassKind::Gpu;
        let spec = DeviceSpec {
            gpu_count: u16::from(gpu),
            vram_mib: c.vram_mib,
            cpu_cores: *cores,
            ram_mib: 1024,
        };
        let d = Device {
            lease: leased.then_some(0),
            ..testing::device_record(
                Address([1; 32]),
                *class,
                spec,
                REGIONS[*region],
                *price,
                *rep,
                10,
            )
        };
        staked += 10;
        recs.push((
            StateKey::Device(a).to_bytes(),
            StateValue::Device(d).encode_value(),
        ));
        recs.push((
            StateKey::Delegation(a, Address([1; 32])).to_bytes(),
            StateValue::Delegation(Delegation { shares: 10 }).encode_value(),
        ));
    }
    let g = Globals {
        supply: Amount::from_base(staked),
        staked: Amount::from_base(staked),
        last_timestamp_ms: params.genesis_time_ms,
        ..Globals::default()
    };
    recs.push((
        StateKey::Globals.to_bytes(),
        StateValue::Globals(g).encode_value(),
    ));
    (Ledger::from_records(&genesis, recs).unwrap(), addrs)
}

fn request(
    classes: &[&str],
    replicas: u16,
    region: Option<usize>,
    cores: u32,
    max: u64,
) -> OpenDeployment {
    OpenDeployment {
        resources: Resources {
            classes: classes
                .iter()
                .map(|c| BoundedString::new(*c).unwrap())
                .collect(),
            min_vram_mib: 0,
            gpu_count: 0,
            cpu_cores: cores,
            ram_mib: 0,
        },
        replicas,
        region: region.map(|r| BoundedString::new(REGIONS[r]).unwrap()),
        duration_secs: 60,
        max_price_per_hour: cairn_primitives::PayUnits(max),
        job: JobSpec::default(),
    }
}

/// The reference: sort every eligible device by (price, reputation desc, rotated address).
fn brute_force(l: &Ledger, o: &OpenDeployment, seed: Address) -> Result<Vec<Address>, ()> {
    let classes: Vec<u16> = o
        .resources
        .classes
        .iter()
        .map(|n| l.params().class_by_name(n.as_str()).unwrap().0)
        .collect();
    let mut cands: Vec<(u64, u32, bool, Address)> = l
        .devices()
        .filter(|(a, d)| {
            l.is_marketable(a)
                && classes.contains(&d.class)
                && o.region.as_ref().is_none_or(|r| *r == d.region)
                && d.spec.cpu_cores >= o.resources.cpu_cores
                && d.price_per_hour <= o.max_price_per_hour
        })
        .map(|(a, d)| {
            (
                d.price_per_hour.0,
                u32::MAX - d.reputation_ppm,
                *a < seed,
                *a,
            )
        })
        .collect();
    cands.sort();
    if cands.len() < usize::from(o.replicas) {
        return Err(());
    }
    Ok(cands
        .iter()
        .take(usize::from(o.replicas))
        .map(|c| c.3)
        .collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn matching_agrees_with_brute_force(
        fleet in prop::collection::vec(
            (prop_oneof![Just(6u16), Just(7u16), Just(11u16)], 0..3usize, 1..6u64, prop_oneof![Just(0u32), Just(500_000u32)], 1..8u32, prop::bool::weighted(0.1)),
            0..60,
        ),
        requests in prop::collection::vec(
            (prop::sample::subsequence(vec!["RTX-4090", "RTX-3090", "CPU"], 1..=3), 1..6u16, prop::option::of(0..3usize), 0..6u32, 1..7u64, any::<[u8; 32]>()),
            1..10,
        ),
    ) {
        let (ledger, _) = fleet_ledger(&fleet);
        for (classes, replicas, region, cores, max, seed) in requests {
            let o = request(&classes, replicas, region, cores, max);
            let seed = Address(seed);
            let got = ledger.match_deployment(&o, seed);
            let want = brute_force(&ledger, &o, seed);
            match (got, want) {
                (Ok(g), Ok(w)) => {
                    prop_assert_eq!(&g, &w);
                    let mut dedup = g.clone();
                    dedup.sort();
                    dedup.dedup();
                    prop_assert_eq!(dedup.len(), g.len(), "a device picked twice");
                }
                (Err(TxError::NotEnoughCapacity { .. }), Err(())) => {}
                (g, w) => prop_assert!(false, "ledger {:?} vs reference {:?}", g, w),
            }
        }
    }
}
