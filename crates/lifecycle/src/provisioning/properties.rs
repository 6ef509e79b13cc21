//! Property tests of the provisioning workflow over random runs of one
//! instance: sessions opened and completed, a download token tried and
//! used up, and the clock moving forward in between.

use proptest::prelude::*;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::{
    BootstrapSession, OneTimeToken, ProvisioningPolicy, Readiness, SessionRefusal, SessionStatus,
    TokenUse,
};

const POLICY: ProvisioningPolicy = ProvisioningPolicy::SEED_003;
const START: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);

#[derive(Debug, Clone)]
enum Op {
    Open { ready: bool },
    Complete { session: usize },
    TryDownload,
    FinishDownload,
    Advance { seconds: i64 },
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<bool>().prop_map(|ready| Op::Open { ready }),
        3 => (0usize..6).prop_map(|session| Op::Complete { session }),
        2 => Just(Op::TryDownload),
        1 => Just(Op::FinishDownload),
        2 => (0i64..1_200).prop_map(|seconds| Op::Advance { seconds }),
    ]
}

/// One instance as the store would hold it.
struct Instance {
    now: OffsetDateTime,
    bootstrap_token: OneTimeToken,
    sessions: Vec<BootstrapSession>,
    download_token: OneTimeToken,
}

impl Instance {
    fn new(bootstrap_ttl_seconds: i64) -> Self {
        let grant = POLICY.download_grants(START)[0];
        Instance {
            now: START,
            bootstrap_token: OneTimeToken::issued(
                POLICY.bootstrap_token_attempts,
                START + Duration::seconds(bootstrap_ttl_seconds),
            ),
            sessions: Vec::new(),
            download_token: OneTimeToken::issued(grant.max_attempts, grant.expires_at),
        }
    }
}

proptest! {
    /// Whatever happens, at most one session completes, the bootstrap
    /// token is used up exactly when one has, no session outlives its
    /// token or its lifetime, a completed session never leaves that state,
    /// an expired one never completes, and the download token is never
    /// tried more often than it allows nor admits anything once used or
    /// expired.
    #[test]
    fn a_run_keeps_the_workflows_invariants(
        bootstrap_ttl_seconds in 60i64..3_600,
        ops in proptest::collection::vec(any_op(), 0..60),
    ) {
        let mut instance = Instance::new(bootstrap_ttl_seconds);
        let readiness = |ready| Readiness { bundle_attached: ready, decryption_key_attached: ready };
        for op in ops {
            let before: Vec<SessionStatus> =
                instance.sessions.iter().map(|session| session.status(instance.now)).collect();
            let download_before = instance.download_token;
            match op {
                Op::Open { ready } => {
                    if let Ok(terms) = BootstrapSession::open(
                        &POLICY, &instance.bootstrap_token, readiness(ready), instance.now,
                    ) {
                        prop_assert!(ready);
                        prop_assert!(terms.session.expires_at <= instance.bootstrap_token.expires_at);
                        prop_assert!(terms.session.expires_at <= instance.now + POLICY.session_lifetime);
                        instance.sessions.push(terms.session);
                    }
                }
                Op::Complete { session } => {
                    if !instance.sessions.is_empty() {
                        let index = session % instance.sessions.len();
                        let current = instance.sessions[index];
                        match current.complete(&instance.bootstrap_token, instance.now) {
                            Ok(done) => {
                                prop_assert_eq!(before[index], SessionStatus::Open);
                                instance.sessions[index] = done.session;
                                instance.bootstrap_token = done.bootstrap_token;
                            }
                            Err(SessionRefusal::Expired) => {
                                prop_assert_eq!(before[index], SessionStatus::Expired);
                            }
                            Err(SessionRefusal::AlreadyComplete) => {
                                prop_assert!(before[index] != SessionStatus::Expired);
                            }
                        }
                    }
                }
                Op::TryDownload => {
                    if let Ok(tried) = instance.download_token.tried(instance.now) {
                        instance.download_token = tried;
                    }
                }
                Op::FinishDownload => {
                    if let Ok(used) = instance.download_token.consumed(instance.now) {
                        instance.download_token = used;
                    }
                }
                Op::Advance { seconds } => instance.now += Duration::seconds(seconds),
            }

            let completed = instance
                .sessions
                .iter()
                .filter(|session| session.completed_at.is_some())
                .count();
            prop_assert!(completed <= 1);
            prop_assert_eq!(completed == 1, instance.bootstrap_token.consumed_at.is_some());
            for (index, status) in before.iter().enumerate() {
                let after = instance.sessions[index].status(instance.now);
                if *status == SessionStatus::Completed {
                    prop_assert_eq!(after, SessionStatus::Completed);
                }
                if *status == SessionStatus::Expired {
                    prop_assert_ne!(after, SessionStatus::Completed);
                }
            }
            let download = instance.download_token;
            prop_assert!(download.attempts <= download.max_attempts);
            if download_before.consumed_at.is_some() {
                prop_assert_eq!(download, download_before);
            }
            if download_before.expires_at <= instance.now {
                for intent in [TokenUse::Try, TokenUse::Consume] {
                    prop_assert!(download.admits(intent, instance.now).is_err());
                }
            }
        }
    }

    /// An expired session admits nothing, whatever the state of the token.
    #[test]
    fn an_expired_session_never_completes(
        session_seconds in 0i64..1_000,
        late_seconds in 0i64..10_000,
        token_seconds in -100i64..10_000,
        used in any::<bool>(),
    ) {
        let session = BootstrapSession {
            expires_at: START + Duration::seconds(session_seconds),
            completed_at: None,
        };
        let mut token = OneTimeToken::issued(1, START + Duration::seconds(token_seconds));
        if used {
            token.consumed_at = Some(START);
        }
        let now = session.expires_at + Duration::seconds(late_seconds);
        prop_assert_eq!(session.complete(&token, now), Err(SessionRefusal::Expired));
    }
}
