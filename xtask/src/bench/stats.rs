//! Small statistics over repeated measurements.

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// One-sided sign test: the chance that at least `wins` of `trials` fair coin flips come up
/// heads. A small value says that `a > b` in `wins` of `trials` paired runs is not chance.
pub fn sign_test_p(wins: usize, trials: usize) -> f64 {
    if wins == 0 {
        return 1.0;
    }
    // Sum of C(trials, k) / 2^trials for k >= wins, built from C(trials, k) term by term.
    let mut term = 0.5f64.powi(i32::try_from(trials).unwrap_or(i32::MAX));
    let mut tail = 0.0;
    for k in 0..=trials {
        if k >= wins {
            tail += term;
        }
        term *= (trials - k) as f64 / (k + 1) as f64;
    }
    tail.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::{median, sign_test_p};

    #[test]
    fn sign_test_matches_the_binomial_tail() {
        assert_eq!(sign_test_p(0, 11), 1.0);
        // P(X >= 9) for X ~ Binomial(11, 1/2) = (55 + 11 + 1) / 2048.
        assert!((sign_test_p(9, 11) - 67.0 / 2048.0).abs() < 1e-12);
        assert!((sign_test_p(6, 11) - 0.5).abs() < 1e-12);
        assert!((sign_test_p(11, 11) - 1.0 / 2048.0).abs() < 1e-12);
    }

    #[test]
    fn median_ignores_order_and_outliers() {
        assert_eq!(median(&[3.0, 1.0, 100.0, 2.0, 2.5]), 2.5);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
