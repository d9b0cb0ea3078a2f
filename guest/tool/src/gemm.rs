//! Pure GEMM helpers: seeded operand generation, the CPU reference (int8 x int8 -> int32,
//! wrapping, as in docs/register-map.md "Data types") and result comparison.

/// SplitMix64: small, seedable, identical on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn fill_i8(&mut self, buf: &mut [i8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            for (d, s) in chunk.iter_mut().zip(bytes) {
                *d = s as i8;
            }
        }
    }
}

/// Operands of one job: A is m x k, B is k x n, both packed row-major.
pub struct Operands {
    pub a: Vec<i8>,
    pub b: Vec<i8>,
}

/// A from the seed first, then B, so a given (m, n, k, seed) always yields the same data.
pub fn operands(m: usize, n: usize, k: usize, seed: u64) -> Operands {
    let mut rng = Rng::new(seed);
    let mut a = vec![0i8; m * k];
    let mut b = vec![0i8; k * n];
    rng.fill_i8(&mut a);
    rng.fill_i8(&mut b);
    Operands { a, b }
}

/// C = A x B with wrapping int32 accumulation. Loop order i, k, j keeps B and C rows streaming.
pub fn reference(m: usize, n: usize, k: usize, a: &[i8], b: &[i8]) -> Vec<i32> {
    let mut c = vec![0i32; m * n];
    for i in 0..m {
        let crow = &mut c[i * n..(i + 1) * n];
        for kk in 0..k {
            let av = a[i * k + kk] as i32;
            if av == 0 {
                continue;
            }
            let brow = &b[kk * n..(kk + 1) * n];
            for (cv, &bv) in crow.iter_mut().zip(brow) {
                *cv = cv.wrapping_add(av.wrapping_mul(bv as i32));
            }
        }
    }
    c
}

/// First mismatch and the number of mismatching elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    pub count: usize,
    pub row: usize,
    pub col: usize,
    pub expected: i32,
    pub got: i32,
}

pub fn compare(n: usize, expected: &[i32], got: &[i32]) -> Option<Mismatch> {
    let mut first = None;
    let mut count = 0;
    for (idx, (&e, &g)) in expected.iter().zip(got).enumerate() {
        if e != g {
            count += 1;
            if first.is_none() {
                first = Some((idx / n, idx % n, e, g));
            }
        }
    }
    first.map(|(row, col, expected, got)| Mismatch { count, row, col, expected, got })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_small_by_hand() {
        // [1 2; 3 4] x [5 6; 7 8] = [19 22; 43 50]
        let c = reference(2, 2, 2, &[1, 2, 3, 4], &[5, 6, 7, 8]);
        assert_eq!(c, vec![19, 22, 43, 50]);
    }

    #[test]
    fn reference_non_square_and_negative() {
        // 1x3 x 3x2
        let c = reference(1, 2, 3, &[-128, 127, -1], &[-128, 1, -128, 1, 5, -7]);
        assert_eq!(c, vec![16384 - 16256 - 5, -128 + 127 + 7]);
    }

    #[test]
    fn operands_are_deterministic_and_seed_dependent() {
        let x = operands(17, 33, 9, 1);
        let y = operands(17, 33, 9, 1);
        let z = operands(17, 33, 9, 2);
        assert_eq!(x.a, y.a);
        assert_eq!(x.b, y.b);
        assert_ne!(x.a, z.a);
        assert_eq!(x.a.len(), 17 * 9);
        assert_eq!(x.b.len(), 9 * 33);
    }

    #[test]
    fn compare_reports_first_and_count() {
        assert_eq!(compare(2, &[1, 2, 3, 4], &[1, 2, 3, 4]), None);
        let m = compare(2, &[1, 2, 3, 4], &[1, 9, 3, 8]).unwrap();
        assert_eq!(m, Mismatch { count: 2, row: 0, col: 1, expected: 2, got: 9 });
    }
}
