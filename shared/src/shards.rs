//! Write sharding: a key that takes a share of all traffic (every event of an hour, every lead on
//! the board) is spread over several partition key values, because one DynamoDB partition takes
//! about 1,000 write units a second and a throttled index throttles writes to its table.

/// Which of `shards` shards `key` belongs to: FNV-1a of the key, stable across processes and
/// releases (a shard count change moves keys, so stored items must be rewritten).
pub fn shard_of(key: &str, shards: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % shards.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        assert_eq!(shard_of("a", 32), 0xe40c_292c % 32, "FNV-1a");
        assert_eq!(shard_of("x", 1), 0);
        assert_eq!(shard_of("x", 0), 0, "no shards means one");
        let mut counts = [0u32; 32];
        for i in 0..32_000 {
            counts[shard_of(&format!("evt-{i}"), 32) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
