//! `verify`: the last step of every plan. It changes nothing: the checks of the migrated
//! layout run after the transaction (`crate::verify`), and their result is this step's line in
//! the report.

use super::{Ctx, Record, Res, Save, StepError, StepKind, Wire};
use serde::{Deserialize, Serialize};

/// This family's undo record.
type R = NoRecord;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verify {}

/// Verify has nothing to undo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoRecord;

impl Record for NoRecord {
    fn from_wire(_: &Wire) -> Result<Self, StepError> {
        Ok(NoRecord)
    }
    fn to_wire(&self) -> Wire {
        Wire::default()
    }
}

impl StepKind for Verify {
    type Record = R;
    fn summary(&self) -> String {
        "verify the migrated layout".to_string()
    }
    fn apply(&self, _: &mut R, _: &Ctx, _: &mut Save<R>) -> Res {
        Ok(())
    }
    fn undo(&self, _: &mut R, _: &Ctx, _: &mut Save<R>) -> Res {
        Ok(())
    }
}
