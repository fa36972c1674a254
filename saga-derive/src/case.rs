//! Identifier case conversion.

/// `OrderCreate` -> `order_create`, `HTTPCall` -> `http_call`, `Step2Go` -> `step2_go`.
pub fn snake_case(ident: &str) -> String {
    let chars: Vec<char> = ident.chars().collect();
    let mut out = String::with_capacity(ident.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let boundary = i > 0 && {
                let prev = chars[i - 1];
                let next_is_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
                prev.is_lowercase()
                    || prev.is_ascii_digit()
                    || (prev.is_uppercase() && next_is_lower)
            };
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn variant_names_become_snake_case_step_names() {
        assert_eq!(snake_case("OrderCreate"), "order_create");
        assert_eq!(snake_case("Pay"), "pay");
        assert_eq!(snake_case("HTTPCall"), "http_call");
        assert_eq!(snake_case("Step2Go"), "step2_go");
        assert_eq!(snake_case("Already_Snake"), "already_snake");
    }
}
