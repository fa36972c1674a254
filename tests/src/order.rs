//! The submitOrder body and a random order generator.

use rand::Rng;
use serde::Serialize;
use serde_json::Value;

/// One submitOrder request body. Its saga's gid is `order-{order_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    /// 1 to 64 of `[A-Za-z0-9_-]`.
    pub order_id: String,
    /// The buyer (> 0).
    pub user_id: i64,
    /// The product (> 0).
    pub product_id: i64,
    /// How many items (1 to 1000).
    pub product_count: i64,
    /// The payment amount (>= 0).
    pub amount_cents: i64,
    /// The coupon used, if any (> 0).
    pub coupon_id: Option<i64>,
}

impl Order {
    /// User 1 buys one item of product 1 for 100 cents without a coupon. Characters of
    /// `order_id` outside `[A-Za-z0-9_-]` are replaced by `-`.
    pub fn new(order_id: &str) -> Order {
        let order_id = order_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        Order {
            order_id,
            user_id: 1,
            product_id: 1,
            product_count: 1,
            amount_cents: 100,
            coupon_id: None,
        }
    }

    /// Sets the buyer.
    pub fn user(mut self, user_id: i64) -> Order {
        self.user_id = user_id;
        self
    }

    /// Sets product and count.
    pub fn product(mut self, product_id: i64, count: i64) -> Order {
        self.product_id = product_id;
        self.product_count = count;
        self
    }

    /// Sets the amount.
    pub fn amount(mut self, cents: i64) -> Order {
        self.amount_cents = cents;
        self
    }

    /// Sets the coupon.
    pub fn coupon(mut self, coupon_id: i64) -> Order {
        self.coupon_id = Some(coupon_id);
        self
    }

    /// The saga's gid: `order-{order_id}`.
    pub fn gid(&self) -> String {
        format!("order-{}", self.order_id)
    }

    /// The pay saga's gid: `pay-{order_id}`.
    pub fn pay_gid(&self) -> String {
        format!("pay-{}", self.order_id)
    }

    /// The JSON body (with `"coupon_id": null` when there is none).
    pub fn body(&self) -> Value {
        serde_json::to_value(self).expect("an order serializes to JSON")
    }
}

/// A random order generator: products, counts, coupons and users drawn uniformly.
#[derive(Debug, Clone)]
pub struct OrderMix {
    /// Prefix of every generated order id (`{prefix}-{n}`).
    pub prefix: String,
    /// Products to buy (unknown ids make business failures).
    pub products: Vec<i64>,
    /// Counts are drawn from `1..=max_count`.
    pub max_count: i64,
    /// Coupons to use, drawn for a `coupon_rate` share of the orders.
    pub coupons: Vec<i64>,
    /// Share of orders with a coupon, 0.0 to 1.0.
    pub coupon_rate: f64,
    /// Users are drawn from `1..=users`.
    pub users: i64,
}

impl OrderMix {
    /// A mix over `products` with counts 1 to 3, users 1 to 3 and no coupons.
    pub fn new(prefix: &str, products: &[i64]) -> OrderMix {
        OrderMix {
            prefix: prefix.to_string(),
            products: products.to_vec(),
            max_count: 3,
            coupons: Vec::new(),
            coupon_rate: 0.0,
            users: 3,
        }
    }

    /// Uses a coupon from `coupons` on a `rate` share of the orders.
    pub fn with_coupons(mut self, coupons: &[i64], rate: f64) -> OrderMix {
        self.coupons = coupons.to_vec();
        self.coupon_rate = rate;
        self
    }

    /// `n` orders with ids `{prefix}-0` .. `{prefix}-{n-1}`.
    pub fn generate(&self, n: usize, rng: &mut impl Rng) -> Vec<Order> {
        (0..n)
            .map(|i| {
                let product = self.products[rng.random_range(0..self.products.len())];
                let mut order = Order::new(&format!("{}-{i}", self.prefix))
                    .user(rng.random_range(1..=self.users))
                    .product(product, rng.random_range(1..=self.max_count))
                    .amount(rng.random_range(0..100_000));
                if !self.coupons.is_empty() && rng.random_bool(self.coupon_rate) {
                    order = order.coupon(self.coupons[rng.random_range(0..self.coupons.len())]);
                }
                order
            })
            .collect()
    }
}
