//! Any persistable type can be a step's output: paths, generics, tuples, options, unit.

use std::collections::BTreeMap;

use saga_core::{Retry, Saga, StepContext, StepError};

mod ids {
    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct Ticket {
        pub seat: u32,
    }
}

#[derive(Saga)]
#[saga(input = Vec<u8>)]
pub(crate) enum Outputs {
    #[compensate(book_undo)]
    Book(ids::Ticket),
    #[compensate(pair_undo)]
    Pair((u32, String)),
    #[compensate(map_undo)]
    Map(BTreeMap<String, Vec<i64>>),
    #[pivot]
    Maybe(Option<u8>),
    #[retriable]
    Unit(()),
}

struct H;

impl OutputsSteps for H {
    async fn book(&self, _: &StepContext, _: &Vec<u8>) -> Result<ids::Ticket, StepError> {
        Ok(ids::Ticket { seat: 1 })
    }
    async fn book_undo(&self, _: &StepContext, _: &Vec<u8>, t: Option<ids::Ticket>) -> Result<(), Retry> {
        let _ = t.map(|t| t.seat);
        Ok(())
    }
    async fn pair(&self, _: &StepContext, _: &Vec<u8>) -> Result<(u32, String), StepError> {
        Ok((1, "a".into()))
    }
    async fn pair_undo(&self, _: &StepContext, _: &Vec<u8>, _: Option<(u32, String)>) -> Result<(), Retry> {
        Ok(())
    }
    async fn map(&self, _: &StepContext, _: &Vec<u8>) -> Result<BTreeMap<String, Vec<i64>>, StepError> {
        Ok(BTreeMap::new())
    }
    async fn map_undo(
        &self,
        _: &StepContext,
        _: &Vec<u8>,
        _: Option<BTreeMap<String, Vec<i64>>>,
    ) -> Result<(), Retry> {
        Ok(())
    }
    async fn maybe(&self, _: &StepContext, _: &Vec<u8>) -> Result<Option<u8>, StepError> {
        Ok(None)
    }
    async fn unit(&self, _: &StepContext, _: &Vec<u8>) -> Result<(), Retry> {
        Ok(())
    }
}

fn main() {
    Outputs::definition().validate().unwrap();
    let _ = H;
}
