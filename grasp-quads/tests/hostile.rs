//! Hostile input: arbitrary bytes and mutated records never panic and are
//! never accepted; only the untouched record opens.

use grasp_quads::{Config, DomainKey, KeyRing, MasterSecret, Sealer};
use proptest::prelude::*;

fn sealer() -> std::sync::Arc<Sealer> {
    Sealer::new(
        KeyRing::new(DomainKey::from_master(&MasterSecret::from_bytes([5; 32]))),
        Config::default(),
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_are_dropped_not_panicked_on(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let s = sealer();
        prop_assert!(s.open_multicast(now(), &bytes).is_err());
        prop_assert!(s.responder().open(now(), &bytes).is_err());
        prop_assert!(s.initiator().open(now(), &bytes).is_err());
    }

    #[test]
    fn any_single_change_to_a_record_is_rejected(
        msg in proptest::collection::vec(any::<u8>(), 0..200),
        pos in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        cut in any::<prop::sample::Index>(),
    ) {
        let a = sealer();
        let b = Sealer::new(
            KeyRing::new(DomainKey::from_master(&MasterSecret::from_bytes([5; 32]))),
            Config::default(),
        );
        let t = now();
        // Multicast: flip one byte, or cut the record short.
        let rec = a.seal_multicast(t, &msg);
        let mut bad = rec.to_vec();
        let i = pos.index(bad.len());
        bad[i] ^= flip;
        prop_assert!(b.open_multicast(t, &bad).is_err());
        let n = cut.index(rec.len());
        prop_assert!(b.open_multicast(t, &rec[..n]).is_err());
        prop_assert_eq!(b.open_multicast(t, &rec).unwrap(), msg.clone());
        // Unicast opening record: the same.
        let mut ini = a.initiator();
        let open = ini.seal(t, &msg).unwrap();
        let mut bad = open.to_vec();
        let i = pos.index(bad.len());
        bad[i] ^= flip;
        prop_assert!(b.responder().open(t, &bad).is_err());
        prop_assert!(b.responder().open(t, &open[..cut.index(open.len())]).is_err());
        prop_assert_eq!(b.responder().open(t, &open).unwrap(), msg);
    }
}
