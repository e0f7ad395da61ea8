use cairn_primitives::{DeviceClass, Genesis, GenesisError};

fn base() -> Genesis {
    Genesis::from_toml(include_str!("sample_genesis.toml")).unwrap()
}

#[test]
fn documented_genesis_round_trips_and_validates() {
    let g = base();
    let text = g.to_documented_toml();
    assert!(text.contains("# Epoch length."));
    let back = Genesis::from_toml(&text).unwrap();
    assert_eq!(back, g);
    back.validate().unwrap();
}

#[test]
fn bad_fields_are_named() {
    type Mutation = Box<dyn Fn(&mut Genesis)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "emission.decay_per_epoch",
            Box::new(|g| g.emission.decay_per_epoch = "1.5".into()),
        ),
        ("rewards", Box::new(|g| g.rewards.treasury_bps += 1)),
        (
            "token.supply_cap",
            Box::new(|g| g.token.supply_cap = "10".into()),
        ),
        ("chain_id", Box::new(|g| g.chain_id = "has space".into())),
        ("fees.min_fee", Box::new(|g| g.fees.min_fee = "abc".into())),
        ("epoch_secs", Box::new(|g| g.epoch_secs = 0)),
        (
            "class[1].name",
            Box::new(|g| g.classes[1].name = g.classes[0].name.clone()),
        ),
    ];
    for (field, mutate) in cases {
        let mut g = base();
        mutate(&mut g);
        match g.validate() {
            Err(GenesisError::Field { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected a field error, got {other:?}"),
        }
    }
    assert!(matches!(
        Genesis::from_toml("chain_id = 5"),
        Err(GenesisError::Parse(_))
    ));
    assert_eq!(base().classes, DeviceClass::default_catalog());
}
