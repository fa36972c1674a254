//! Request bodies of the order API and their validation at the edge.

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

/// The payOrder body, and the input of the `PayOrder` saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    /// The order to pay.
    pub order_id: String,
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

#[cfg(test)]
mod tests {
    use super::*;

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
