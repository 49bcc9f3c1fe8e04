//! What unit tests share: a fixed sequence of pseudo-random numbers (xorshift64), so a
//! test that generates its inputs fails the same way each time it fails.

/// The numbers of xorshift64 from `seed` (not zero), one per call.
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sequence_is_fixed_and_moves() {
        let mut a = super::xorshift(1);
        let mut b = super::xorshift(1);
        let first: Vec<u64> = (0..4).map(|_| a()).collect();
        assert_eq!(first, (0..4).map(|_| b()).collect::<Vec<_>>());
        assert_eq!(first[0], 1082269761);
        assert!(first.windows(2).all(|w| w[0] != w[1]));
    }
}
