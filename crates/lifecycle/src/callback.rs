use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A stage a provisioning machine reports through `/internal/bootstrap/callback`
/// (seed 003): installing(1) -> configuring(2) -> securing(3) -> ready(4), or
/// error at 2 or 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallbackStage {
    Installing,
    Configuring,
    Securing,
    Ready,
    Error,
}

impl CallbackStage {
    pub const ALL: [CallbackStage; 5] = [
        CallbackStage::Installing,
        CallbackStage::Configuring,
        CallbackStage::Securing,
        CallbackStage::Ready,
        CallbackStage::Error,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            CallbackStage::Installing => "installing",
            CallbackStage::Configuring => "configuring",
            CallbackStage::Securing => "securing",
            CallbackStage::Ready => "ready",
            CallbackStage::Error => "error",
        }
    }

    /// Whether `seq` is a sequence number this stage may carry.
    pub fn accepts_seq(self, seq: u8) -> bool {
        match self {
            CallbackStage::Installing => seq == 1,
            CallbackStage::Configuring => seq == 2,
            CallbackStage::Securing => seq == 3,
            CallbackStage::Ready => seq == 4,
            CallbackStage::Error => matches!(seq, 2 | 3),
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, CallbackStage::Ready | CallbackStage::Error)
    }
}

impl fmt::Display for CallbackStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for CallbackStage {
    type Err = CallbackError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CallbackStage::ALL
            .into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| CallbackError::UnknownStage(s.to_owned()))
    }
}

/// Why a callback was refused; every variant is a 400 at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error(
        "unknown stage {0:?}; expected one of: installing, configuring, securing, ready, error"
    )]
    UnknownStage(String),
    #[error("seq must be between 1 and 4, got {0}")]
    SeqOutOfRange(i64),
    #[error(
        "stage {stage} cannot carry seq {seq} (installing=1, configuring=2, securing=3, ready=4, error=2 or 3)"
    )]
    StageSeqMismatch { stage: CallbackStage, seq: u8 },
    #[error("seq {seq} is not after the last accepted seq {last}")]
    NotIncreasing { seq: u8, last: u8 },
    #[error("provisioning already ended with {0}; no further callbacks are accepted")]
    AlreadyFinal(CallbackStage),
}

/// The callback state of one provisioning instance: the last accepted seq and
/// stage. Sequence numbers must strictly increase (a gap is allowed, so a lost
/// callback does not wedge the machine); `ready` and `error` end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallbackSequence {
    last: Option<(u8, CallbackStage)>,
}

impl CallbackSequence {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the state from what the store holds.
    pub fn resume(last: Option<(u8, CallbackStage)>) -> Self {
        Self { last }
    }

    pub fn last(&self) -> Option<(u8, CallbackStage)> {
        self.last
    }

    pub fn is_final(&self) -> bool {
        self.last.is_some_and(|(_, stage)| stage.is_final())
    }

    /// Accepts the callback `(seq, stage)` or says why not. `seq` is taken
    /// as the wire gives it so an out-of-range number is this machine's
    /// error, not a parse failure elsewhere.
    pub fn accept(
        &self,
        seq: i64,
        stage: CallbackStage,
    ) -> Result<CallbackSequence, CallbackError> {
        let seq = u8::try_from(seq)
            .ok()
            .filter(|seq| (1..=4).contains(seq))
            .ok_or(CallbackError::SeqOutOfRange(seq))?;
        if let Some((last_seq, last_stage)) = self.last {
            if last_stage.is_final() {
                return Err(CallbackError::AlreadyFinal(last_stage));
            }
            if seq <= last_seq {
                return Err(CallbackError::NotIncreasing {
                    seq,
                    last: last_seq,
                });
            }
        }
        if !stage.accepts_seq(seq) {
            return Err(CallbackError::StageSeqMismatch { stage, seq });
        }
        Ok(Self {
            last: Some((seq, stage)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CallbackStage::*;
    use proptest::prelude::*;

    fn run(steps: &[(i64, CallbackStage)]) -> Result<CallbackSequence, CallbackError> {
        steps
            .iter()
            .try_fold(CallbackSequence::new(), |state, (seq, stage)| {
                state.accept(*seq, *stage)
            })
    }

    #[test]
    fn the_happy_path_runs_to_ready() {
        let done = run(&[(1, Installing), (2, Configuring), (3, Securing), (4, Ready)]).unwrap();
        assert_eq!(done.last(), Some((4, Ready)));
        assert!(done.is_final());
    }

    #[test]
    fn error_is_allowed_at_two_or_three_only() {
        assert!(run(&[(1, Installing), (2, Error)]).is_ok());
        assert!(run(&[(1, Installing), (2, Configuring), (3, Error)]).is_ok());
        assert_eq!(
            run(&[(1, Error)]),
            Err(CallbackError::StageSeqMismatch {
                stage: Error,
                seq: 1
            })
        );
        assert_eq!(
            run(&[(1, Installing), (4, Error)]),
            Err(CallbackError::StageSeqMismatch {
                stage: Error,
                seq: 4
            })
        );
    }

    #[test]
    fn sequence_violations_are_refused() {
        assert_eq!(
            run(&[(1, Installing), (1, Installing)]),
            Err(CallbackError::NotIncreasing { seq: 1, last: 1 })
        );
        assert_eq!(
            run(&[(1, Installing), (3, Securing), (2, Configuring)]),
            Err(CallbackError::NotIncreasing { seq: 2, last: 3 })
        );
        assert_eq!(
            run(&[(2, Installing)]),
            Err(CallbackError::StageSeqMismatch {
                stage: Installing,
                seq: 2
            })
        );
        assert_eq!(
            run(&[(0, Installing)]),
            Err(CallbackError::SeqOutOfRange(0))
        );
        assert_eq!(run(&[(5, Ready)]), Err(CallbackError::SeqOutOfRange(5)));
        assert_eq!(run(&[(-1, Ready)]), Err(CallbackError::SeqOutOfRange(-1)));
        assert_eq!(
            run(&[(1, Installing), (2, Error), (3, Securing)]),
            Err(CallbackError::AlreadyFinal(Error))
        );
        // A skipped stage is fine: the machine must not wedge on a lost callback.
        assert!(run(&[(1, Installing), (3, Securing), (4, Ready)]).is_ok());
    }

    #[test]
    fn stages_parse_from_their_wire_names() {
        for stage in CallbackStage::ALL {
            assert_eq!(stage.as_str().parse::<CallbackStage>().unwrap(), stage);
        }
        assert_eq!(
            "done".parse::<CallbackStage>(),
            Err(CallbackError::UnknownStage("done".into()))
        );
    }

    fn any_stage() -> impl Strategy<Value = CallbackStage> {
        proptest::sample::select(CallbackStage::ALL.to_vec())
    }

    proptest! {
        /// Whatever a machine sends, the accepted callbacks have strictly
        /// increasing seqs that match their stages, and at most one final
        /// stage, which is the last accepted.
        #[test]
        fn accepted_sequences_increase_and_end_at_most_once(
            attempts in proptest::collection::vec((-1i64..7, any_stage()), 0..30),
        ) {
            let mut state = CallbackSequence::new();
            let mut accepted = Vec::new();
            for (seq, stage) in attempts {
                if let Ok(next) = state.accept(seq, stage) {
                    accepted.push(next.last().unwrap());
                    state = next;
                }
            }
            prop_assert!(accepted.windows(2).all(|pair| pair[0].0 < pair[1].0));
            prop_assert!(accepted.iter().all(|(seq, stage)| stage.accepts_seq(*seq)));
            let finals = accepted.iter().filter(|(_, stage)| stage.is_final()).count();
            prop_assert!(finals <= 1);
            if finals == 1 {
                prop_assert!(accepted.last().unwrap().1.is_final());
            }
        }
    }
}
