use super::*;

fn flag(name: &str, percent: f64, variants: &[(&str, u32)]) -> Flag {
    let spec = FlagSpec {
        name: name.into(),
        percent,
        header: Some("x-user-id".into()),
        variants: variants.iter().map(|(n, w)| ((*n).into(), *w)).collect(),
        ..Default::default()
    };
    Flag::build(&spec, None).expect("flag")
}

const QUARTERS: [(&str, u32); 4] = [("red", 25), ("blue", 25), ("green", 25), ("yellow", 25)];

fn variant(flag: &Flag, key: &str) -> String {
    let (state, reason) = flag.evaluate(Some(key.as_bytes()));
    assert_eq!(reason, Reason::Split);
    flag.state_name(state).to_owned()
}

/// flagd's own fractional tests (core/pkg/evaluator fractional_test.go):
/// the bucket key is the flag key followed by the targeting key.
#[test]
fn buckets_agree_with_flagds_test_vectors() {
    let header_color = flag("headerColor", 0.0, &QUARTERS);
    for (email, expected) in [
        ("rachel@faas.com", "blue"),
        ("monica@faas.com", "yellow"),
        ("joey@faas.com", "red"),
        ("ross@faas.com", "blue"),
    ] {
        assert_eq!(variant(&header_color, email), expected, "{email}");
    }
    // `{"cat": ["my-seed", email]}`: the same hash under another prefix.
    let seeded = flag("my-seed", 0.0, &QUARTERS);
    for (email, expected) in [
        ("rachel@faas.com", "green"),
        ("monica@faas.com", "red"),
        ("joey@faas.com", "blue"),
        ("ross@faas.com", "green"),
    ] {
        assert_eq!(variant(&seeded, email), expected, "{email}");
    }
    let halves = flag("headerColor", 0.0, &[("blue", 50), ("green", 50)]);
    assert_eq!(variant(&halves, "foo@foo.com"), "green");
    // `{"var": "email"}` alone hashes the key without a prefix.
    assert_eq!((u64::from(hash("", b"ross@faas.com")) * 4) >> 32, 0, "red");
}

#[test]
fn ten_percent_of_ten_thousand_and_raising_only_adds() {
    let ten = flag("new-checkout", 10.0, &[]);
    let twenty_five = flag("new-checkout", 25.0, &[]);
    let on = |f: &Flag, key: &str| f.evaluate(Some(key.as_bytes())).0 == 0;
    let mut count = 0;
    for user in 0..10_000 {
        let key = format!("user-{user}");
        if on(&ten, &key) {
            count += 1;
            assert!(
                on(&twenty_five, &key),
                "{key} left the flag when it was raised"
            );
        }
    }
    assert!((900..=1100).contains(&count), "{count} of 10,000");
}

#[test]
fn disabled_and_keyless_units_get_the_default_and_no_header() {
    let mut spec = FlagSpec {
        name: "new-checkout".into(),
        percent: 100.0,
        header: Some("x-user-id".into()),
        ..Default::default()
    };
    let on = Flag::build(&spec, None).expect("flag");
    let (state, reason) = on.evaluate(Some(b"u1"));
    assert_eq!((on.state_name(state), reason), ("on", Reason::Split));
    assert_eq!(
        on.header_part(state, reason).as_deref(),
        Some("new-checkout")
    );
    let (state, reason) = on.evaluate(None);
    assert_eq!((on.state_name(state), reason), ("off", Reason::Default));
    assert_eq!(on.header_part(state, reason), None);
    spec.enabled = false;
    let off = Flag::build(&spec, Some(&on)).expect("flag");
    let (state, reason) = off.evaluate(Some(b"u1"));
    assert_eq!((off.state_name(state), reason), ("off", Reason::Disabled));
    // The counts carry over to the next table.
    on.counts().record(0, 200, None);
    assert_eq!(off.counts().totals(0).requests, 1);
    let theme = flag("theme", 0.0, &[("light", 1), ("dark", 1)]);
    let (state, reason) = theme.evaluate(Some(b"u1"));
    let part = theme
        .header_part(state, reason)
        .expect("a variant is named");
    assert!(part == "theme=light" || part == "theme=dark", "{part}");
}

#[test]
fn bad_specs_name_their_key() {
    let bad = |spec: FlagSpec| Flag::build(&spec, None).expect_err("bad").0;
    let good = FlagSpec {
        name: "f".into(),
        header: Some("x-user-id".into()),
        ..Default::default()
    };
    assert_eq!(
        bad(FlagSpec {
            name: "a b".into(),
            ..good.clone()
        }),
        "name"
    );
    assert_eq!(
        bad(FlagSpec {
            header: None,
            ..good.clone()
        }),
        "key"
    );
    assert_eq!(
        bad(FlagSpec {
            percent: 101.0,
            ..good.clone()
        }),
        "percent"
    );
    assert_eq!(
        bad(FlagSpec {
            percent: f64::NAN,
            ..good.clone()
        }),
        "percent"
    );
    let variants = vec![("a".to_owned(), 0), ("b".to_owned(), 0)];
    assert_eq!(
        bad(FlagSpec {
            variants,
            ..good.clone()
        }),
        "variants"
    );
    let variants = vec![("a".to_owned(), 1), ("a".to_owned(), 1)];
    assert_eq!(
        bad(FlagSpec {
            variants,
            ..good.clone()
        }),
        "variants"
    );
    let variants = vec![("a".to_owned(), 1)];
    assert_eq!(
        bad(FlagSpec {
            variants,
            default_variant: Some("z".into()),
            ..good
        }),
        "default_variant"
    );
}
