//! The central bank's own tables (ledger, settlement and directory have
//! theirs). Their DDL lives with the rest of the crate's SQL in
//! [`crate::db`]; the migration statics keep their paths here.

pub use crate::db::{
    CENTRAL_KEY_CUSTODY_MIGRATIONS, CENTRAL_MIGRATIONS, OUTBOX_MIGRATIONS, REPORT_MIGRATIONS,
};
