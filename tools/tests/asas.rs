//! The example ASAs (`grasp_tools::asa`) over the in-memory fabric: what
//! each promises in its documentation, from one source both ways: linked
//! to each node's engine, and as clients of each node's ASA socket
//! (`grasp_asa_api::client`, issue 12).

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;

use grasp_tools::asa::{briggs_gray, brski, prefix_manager, Transcript};

mod daemon;
use daemon::fabric::{line_reached as line, went, Reach};

#[tokio::test]
async fn briggs_and_gray_linked_in() {
    briggs_and_gray_do_everything_they_say(Reach::InProcess).await;
}

#[tokio::test]
async fn briggs_and_gray_through_the_asa_socket() {
    briggs_and_gray_do_everything_they_say(Reach::Socket).await;
}

#[tokio::test]
async fn the_prefix_manager_linked_in() {
    the_prefix_manager_delegates_by_role_and_declines_what_it_cannot_do(Reach::InProcess).await;
}

#[tokio::test]
async fn the_prefix_manager_through_the_asa_socket() {
    the_prefix_manager_delegates_by_role_and_declines_what_it_cannot_do(Reach::Socket).await;
}

#[tokio::test]
async fn brski_linked_in() {
    brski_announcements_carry_rfc_8995_spellings_and_scopes(Reach::InProcess).await;
}

#[tokio::test]
async fn brski_through_the_asa_socket() {
    brski_announcements_carry_rfc_8995_spellings_and_scopes(Reach::Socket).await;
}

async fn briggs_and_gray_do_everything_they_say(reach: Reach) {
    let nodes = line(3, reach).await;
    let t = Arc::new(Transcript::new(true));
    let bank = briggs_gray::briggs(&nodes[2], 1, Duration::from_millis(200), t.clone())
        .await
        .unwrap();
    // Several borrowers (seeds), so both endings of a loan are seen.
    let mut endings = (0, 0);
    for seed in 0..12 {
        let r = briggs_gray::gray(&nodes[0], seed, Duration::from_secs(3), &t)
            .await
            .unwrap();
        let (loc, relayed, _) = r.discovery.expect("EX2 discovered");
        assert!(relayed && loc.starts_with("[fd00:fab::3]"), "{loc}");
        assert_eq!(r.sync.unwrap().0, "[1, \"two\", 3]");
        let (v, loop_count, _) = r.flood.expect("EX1 flood");
        assert_eq!(v, "\"the time from Briggs\"");
        assert_eq!(loop_count, 3, "4, minus one relay");
        let (want, result, rounds, _) = r.negotiation.expect("a negotiation");
        match result {
            briggs_gray::LoanResult::Agreed(n) => {
                assert!(n <= want);
                endings.0 += 1;
            }
            briggs_gray::LoanResult::Refused(why) => {
                assert!(
                    ["You are mean!", "Insufficient funds"].contains(&why.as_str()),
                    "{why}"
                );
                assert!(rounds >= 1);
                endings.1 += 1;
            }
        }
    }
    assert!(endings.0 > 0 && endings.1 > 0, "{endings:?}");
    let said: Vec<String> = t.lines().into_iter().map(|l| l.what).collect();
    assert!(
        said.iter().any(|l| l.contains("M_WAIT")),
        "Briggs asks for time now and then"
    );
    bank.abort();
    went(reach, &nodes);
}

async fn the_prefix_manager_delegates_by_role_and_declines_what_it_cannot_do(reach: Reach) {
    let nodes = line(3, reach).await;
    let t = Arc::new(Transcript::new(true));
    let base = Ipv6Addr::new(0xfd00, 5, 0, 0, 0, 0, 0, 0);
    let (task, delegated) =
        prefix_manager::delegator(&nodes[2], base, 32, Duration::from_millis(200), t.clone())
            .await
            .unwrap();
    let mut got = Vec::new();
    for role in ["RSG", "ASG", "CSG", "CSG"] {
        let p = prefix_manager::requester(&nodes[0], role, Duration::from_secs(3), &t)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{role} got nothing"));
        let want = prefix_manager::PARAMS
            .iter()
            .find(|(r, _)| *r == role)
            .unwrap()
            .1;
        assert_eq!(p.1, want, "{role}");
        assert_eq!(
            u128::from(p.0) >> 96,
            u128::from(base) >> 96,
            "inside the pool"
        );
        got.push(p);
    }
    // No two delegations overlap.
    for (i, a) in got.iter().enumerate() {
        for b in &got[i + 1..] {
            let (sa, sb) = (1u128 << (128 - a.1), 1u128 << (128 - b.1));
            let (a0, b0) = (u128::from(a.0), u128::from(b.0));
            assert!(a0 + sa <= b0 || b0 + sb <= a0, "{a:?} overlaps {b:?}");
        }
    }
    assert_eq!(delegated.lock().unwrap().len(), 4);
    task.abort();

    // A pool too small for the role: declined, nothing delegated.
    let nodes = line(2, reach).await;
    let (task, delegated) =
        prefix_manager::delegator(&nodes[1], base, 40, Duration::from_millis(200), t.clone())
            .await
            .unwrap();
    let p = prefix_manager::requester(&nodes[0], "RSG", Duration::from_secs(3), &t)
        .await
        .unwrap();
    assert_eq!(p, None, "a /34 cannot come from a /40");
    assert!(t.lines().iter().any(|l| l.what.contains("pool empty")));
    assert!(delegated.lock().unwrap().is_empty());
    went(reach, &nodes);
    // A role not in the parameters asks for nothing.
    assert_eq!(
        prefix_manager::requester(&nodes[0], "XYZ", Duration::from_secs(3), &t)
            .await
            .unwrap(),
        None
    );
    task.abort();
}

async fn brski_announcements_carry_rfc_8995_spellings_and_scopes(reach: Reach) {
    let nodes = line(3, reach).await;
    let t = Arc::new(Transcript::new(true));
    let registrar: Ipv6Addr = "fd00:fab::3".parse().unwrap();
    let r = brski::announce(
        &nodes[2],
        brski::registrar_flood(registrar, 8443),
        Duration::from_millis(200),
        t.clone(),
    )
    .await
    .unwrap();
    let proxy_ll: Ipv6Addr = "fe80::2:2".parse().unwrap();
    let p = brski::announce(
        &nodes[1],
        brski::proxy_flood(proxy_ll, 4443),
        Duration::from_millis(200),
        t.clone(),
    )
    .await
    .unwrap();
    // The registrar announcement crosses the relay, loop count 255 -> 254.
    let (loc, value, lc) = brski::find(&nodes[0], brski::REGISTRAR, Duration::from_secs(3))
        .await
        .unwrap()
        .expect("AN_join_registrar reached two hops away");
    assert_eq!(loc.to_string(), "[fd00:fab::3]:8443/6");
    assert_eq!(value, "EST-TLS");
    assert_eq!(lc, 254);
    // The proxy announcement is link-local: its neighbour N1 has it (loop
    // count 1 arrives as 0 after the decrement)...
    let got = brski::find(&nodes[0], brski::PROXY, Duration::from_secs(3))
        .await
        .unwrap();
    let (loc, value, _) = got.expect("AN_Proxy on the proxy's link");
    assert_eq!(loc.to_string(), "[fe80::2:2]:4443/6");
    assert_eq!(value, "");
    // ...and N2's other neighbour does not relay it further: N3 is the
    // proxy's neighbour too, so check a node two links from the proxy.
    let far = line(4, reach).await;
    let p2 = brski::announce(
        &far[0],
        brski::proxy_flood(proxy_ll, 4443),
        Duration::from_millis(100),
        t.clone(),
    )
    .await
    .unwrap();
    assert!(brski::find(&far[1], brski::PROXY, Duration::from_secs(2))
        .await
        .unwrap()
        .is_some());
    assert!(
        brski::find(&far[2], brski::PROXY, Duration::from_millis(800))
            .await
            .unwrap()
            .is_none(),
        "AN_Proxy (loop count 1) must not be relayed"
    );
    for task in [r, p, p2] {
        task.abort();
    }
    went(reach, &nodes);
    went(reach, &far);
}
