//! End-to-end tests live beside this file, one file per area; they start the real binaries
//! through `gatehouse-testkit`.
