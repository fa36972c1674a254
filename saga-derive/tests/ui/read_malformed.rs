//! `reads` written as a value, listed twice, and given twice.

use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(a_undo)]
    A(u8),
    #[compensate(b_undo)]
    #[step(reads = A)]
    B(u8),
    #[compensate(c_undo)]
    #[step(reads(A, A))]
    C,
    #[pivot]
    #[step(reads(A), reads(B))]
    D,
}

fn main() {}
