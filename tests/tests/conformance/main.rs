//! The conformance suite: every GRASP operation written once (in the
//! modules here) and run on every backend, over the fabric on a paused
//! clock and, for every scenario that does not need the fabric's own
//! controls, between network namespaces. A new backend is one line at the
//! end of this file.

mod engine;
mod graspy;
mod strangers;
mod transport;

/// Every scenario, for one backend: those that take a place run over the
/// fabric (paused clock) and, in `between_namespaces`, between network
/// namespaces (real time; root only, skipped loudly otherwise).
macro_rules! suite {
    ($backend:expr;
     anywhere: $($module:ident::$scenario:ident),* ;
     fabric: $($fmodule:ident::$fscenario:ident),* $(,)?) => {
        $(
            #[tokio::test(start_paused = true)]
            async fn $scenario() {
                crate::$module::$scenario($backend, grasp_tests::place::Place::Fabric).await
            }
        )*
        $(
            #[tokio::test(start_paused = true)]
            async fn $fscenario() {
                crate::$fmodule::$fscenario($backend).await
            }
        )*
        mod between_namespaces {
            use grasp_tests::place::Place;
            $(
                #[test]
                fn $scenario() {
                    let name = format!("{} on {:?} between namespaces", stringify!($scenario), $backend);
                    Place::run_between_namespaces(&name, crate::$module::$scenario($backend, Place::Netns));
                }
            )*
        }
    };
}

/// The scenarios every backend runs.
macro_rules! every_backend_runs {
    ($backend:expr) => {
        suite!($backend;
            anywhere:
            engine::discover_and_synchronize_between_two_nodes,
            engine::rapid_synchronization_rides_on_the_response,
            engine::flood_get_expire_and_linklocal,
            engine::negotiation_steps_wait_and_accept_with_graspy_loop_counts,
            engine::negotiation_decline_with_reason_both_ways,
            engine::negotiation_loop_exhaustion_timeout_and_vanishing_peer,
            engine::three_node_line_relays_discovery_on_first_try_and_floods_once,
            engine::hundred_concurrent_synchronizations,
            graspy::t1_to_t9_and_t11_registration_discovery_divert_flood_synch;
            fabric:
            engine::a_half_closed_requester_still_gets_its_answer,
            graspy::t10_negotiation_branches,
            transport::multicast_round_trip_with_ifindex,
            transport::channel_round_trip_and_close,
            transport::oversize_is_too_large,
            transport::drops_are_counted,
        );
    };
}
/// And those that need two domains of the backend.
macro_rules! secured_backend_runs {
    ($backend:expr) => {
        #[tokio::test(start_paused = true)]
        async fn another_domain_neither_joins_nor_disturbs() {
            crate::strangers::another_domain_neither_joins_nor_disturbs($backend).await
        }
    };
}

mod plain {
    every_backend_runs!(grasp_tests::backend::Backend::Plain);

    #[tokio::test(start_paused = true)]
    async fn insecure_transport_refuses_negotiation_but_not_discovery() {
        crate::engine::insecure_transport_refuses_negotiation_but_not_discovery().await
    }
}
mod quads {
    every_backend_runs!(grasp_tests::backend::Backend::Quads);
    secured_backend_runs!(grasp_tests::backend::Backend::Quads);
}
mod legacy_quads {
    every_backend_runs!(grasp_tests::backend::Backend::LegacyQuads);
    secured_backend_runs!(grasp_tests::backend::Backend::LegacyQuads);
}
mod tls {
    every_backend_runs!(grasp_tests::backend::Backend::Tls);
    secured_backend_runs!(grasp_tests::backend::Backend::Tls);
}
