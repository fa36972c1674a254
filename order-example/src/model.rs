//! Request bodies of the order API and their validation at the edge.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The submitOrder body, and the input of the `SubmitOrder` saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// 1 to 64 of `[A-Za-z0-9_-]`.
    pub order_id: String,
    /// > 0.
    pub user_id: i64,
    /// > 0.
    pub product_id: i64,
    /// 1 to 1000.
    pub product_count: i64,
    /// >= 0.
    pub amount_cents: i64,
    /// A coupon (> 0) or none.
    #[serde(default)]
    pub coupon_id: Option<i64>,
}

impl OrderRequest {
    /// This order under the key `order_create` answered with (the payCreate body).
    pub fn for_order(&self, order: OrderId) -> OrderRequest {
        OrderRequest {
            order_id: order.order_id,
            ..self.clone()
        }
    }
}

/// The payOrder body, and the input of the `PayOrder` saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    /// The order to pay.
    pub order_id: String,
}

/// The output of step `order_create`: the order's key. `orderCreate` answers with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderId {
    /// The order's id, as submitted.
    pub order_id: String,
}

/// The id of a payment document, made by `payCreate`: `pay-` and 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PaymentId(pub String);

/// The output of steps `pay_create` and `payment_capture`: an order's payment document.
/// `payCreate` and `paymentCapture` answer with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The order it pays for.
    pub order_id: String,
    /// The document's id.
    pub payment_id: PaymentId,
}

/// The payCreateRevert body: the submitOrder body, and the payment's id when the saga knows it
/// (the payment is then cancelled by its id; without it, by the order's id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCancel {
    /// The order.
    #[serde(flatten)]
    pub order: OrderRequest,
    /// The payment `payCreate` made, unless its outcome was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<PaymentId>,
    /// Fields no one asked for, refused by validation (serde's `deny_unknown_fields` does not
    /// see through `flatten`).
    #[serde(flatten, skip_serializing)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl PaymentCancel {
    /// The payCreateRevert body of the saga of `input`: the order `pay_create` read, and the
    /// payment it made when its output is known.
    pub fn of(input: &OrderRequest, order: OrderId, payment: Option<Payment>) -> Self {
        PaymentCancel {
            order: input.for_order(order),
            payment_id: payment.map(|p| p.payment_id),
            unknown: BTreeMap::new(),
        }
    }
}

/// The orderMarkPaid body: the payOrder body, and the captured payment's id when the saga knows
/// it (recorded on the order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkPaid {
    /// The order.
    #[serde(flatten)]
    pub pay: PayRequest,
    /// The payment `paymentCapture` captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<PaymentId>,
    /// Fields no one asked for, refused by validation.
    #[serde(flatten, skip_serializing)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// A field that breaks the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// Checks an order id: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn check_order_id(id: &str) -> Result<(), Invalid> {
    if id.is_empty() || id.len() > 64 {
        return Err(Invalid(format!(
            "order_id must be 1 to 64 characters, got {}",
            id.chars().count()
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(Invalid(format!(
            "order_id may only use [A-Za-z0-9_-], found {c:?}"
        )));
    }
    Ok(())
}

/// Request bodies that validate their fields after parsing.
pub trait Validate {
    /// Checks every field against the contract.
    fn validate(&self) -> Result<(), Invalid>;
}

impl Validate for OrderRequest {
    fn validate(&self) -> Result<(), Invalid> {
        check_order_id(&self.order_id)?;
        if self.user_id <= 0 {
            return Err(Invalid("user_id must be greater than 0".into()));
        }
        if self.product_id <= 0 {
            return Err(Invalid("product_id must be greater than 0".into()));
        }
        if !(1..=1000).contains(&self.product_count) {
            return Err(Invalid("product_count must be 1 to 1000".into()));
        }
        if self.amount_cents < 0 {
            return Err(Invalid("amount_cents must be 0 or more".into()));
        }
        if matches!(self.coupon_id, Some(c) if c <= 0) {
            return Err(Invalid(
                "coupon_id must be greater than 0, or null for no coupon".into(),
            ));
        }
        Ok(())
    }
}

impl Validate for PayRequest {
    fn validate(&self) -> Result<(), Invalid> {
        check_order_id(&self.order_id)
    }
}

impl Validate for PaymentCancel {
    fn validate(&self) -> Result<(), Invalid> {
        no_unknown_fields(&self.unknown)?;
        self.order.validate()?;
        self.payment_id.as_ref().map_or(Ok(()), check_payment_id)
    }
}

impl Validate for MarkPaid {
    fn validate(&self) -> Result<(), Invalid> {
        no_unknown_fields(&self.unknown)?;
        self.pay.validate()?;
        self.payment_id.as_ref().map_or(Ok(()), check_payment_id)
    }
}

fn no_unknown_fields(unknown: &BTreeMap<String, serde_json::Value>) -> Result<(), Invalid> {
    match unknown.keys().next() {
        Some(field) => Err(Invalid(format!("unknown field `{field}`"))),
        None => Ok(()),
    }
}

/// A payment id: `pay-` and 16 lower-case hex digits.
fn check_payment_id(id: &PaymentId) -> Result<(), Invalid> {
    let hex = id.0.strip_prefix("pay-").unwrap_or("");
    if hex.len() == 16
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(Invalid(format!(
            "payment_id must be `pay-` and 16 hex digits, got {:?}",
            id.0
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_bodies_take_the_plain_bodies_and_refuse_unknown_fields() {
        let plain = serde_json::json!({"order_id": "o-1", "user_id": 1, "product_id": 1,
            "product_count": 1, "amount_cents": 5});
        let cancel: PaymentCancel = serde_json::from_value(plain.clone()).unwrap();
        assert_eq!(cancel.payment_id, None);
        assert_eq!(serde_json::to_value(&cancel).unwrap()["order_id"], "o-1");
        let mut with_id = plain.clone();
        with_id["payment_id"] = "pay-00000000000000ff".into();
        let cancel: PaymentCancel = serde_json::from_value(with_id).unwrap();
        assert_eq!(cancel.validate(), Ok(()));
        let mut unknown = plain.clone();
        unknown["surprise"] = 1.into();
        let cancel: PaymentCancel = serde_json::from_value(unknown).unwrap();
        assert_eq!(
            cancel.validate(),
            Err(Invalid("unknown field `surprise`".into()))
        );
        let mut bad_id = plain;
        bad_id["payment_id"] = "7".into();
        let cancel: PaymentCancel = serde_json::from_value(bad_id).unwrap();
        assert!(cancel.validate().is_err());
        let paid: MarkPaid =
            serde_json::from_value(serde_json::json!({"order_id": "o-1"})).unwrap();
        assert_eq!(paid.payment_id, None);
        let paid: MarkPaid =
            serde_json::from_value(serde_json::json!({"order_id": "o-1", "x": 1})).unwrap();
        assert!(paid.validate().is_err());
    }

    fn order() -> OrderRequest {
        OrderRequest {
            order_id: "o-1".into(),
            user_id: 1,
            product_id: 1,
            product_count: 1,
            amount_cents: 0,
            coupon_id: None,
        }
    }

    #[test]
    fn a_valid_order_passes() {
        assert!(order().validate().is_ok());
    }

    #[test]
    fn each_out_of_range_field_is_named() {
        type Change = fn(&mut OrderRequest);
        let cases: [(Change, &str); 7] = [
            (|o| o.order_id = String::new(), "order_id"),
            (|o| o.order_id = "x".repeat(65), "order_id"),
            (|o| o.order_id = "é".into(), "order_id"),
            (|o| o.user_id = 0, "user_id"),
            (|o| o.product_count = 1001, "product_count"),
            (|o| o.amount_cents = -1, "amount_cents"),
            (|o| o.coupon_id = Some(0), "coupon_id"),
        ];
        for (change, field) in cases {
            let mut o = order();
            change(&mut o);
            let err = o.validate().unwrap_err();
            assert!(err.0.contains(field), "{}", err.0);
        }
    }
}
