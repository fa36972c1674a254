//! Pure saga state machine.
