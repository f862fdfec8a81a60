//! The worker's conversation slots: which of the KV cache's sequences a prompt goes to.

/// One conversation's tokens in the KV cache (sequence id = its index).
#[derive(Debug, Clone)]
pub struct Slot<T> {
    /// Its tokens, in order, at positions 0…
    pub tokens: Vec<T>,
    /// When it was last used (a request counter); 0: never.
    pub used: u64,
}

impl<T> Slot<T> {
    /// An empty slot.
    pub fn empty() -> Slot<T> {
        Slot {
            tokens: Vec::new(),
            used: 0,
        }
    }
}

impl<T: PartialEq> Slot<T> {
    /// How many of its tokens `prompt` starts with.
    pub fn common(&self, prompt: &[T]) -> usize {
        self.tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
    }
}

/// The slot a prompt goes to, and the slot whose prefix it reuses (the same one, or another
/// whose cached prefix is copied over): the slot sharing the longest prefix with `prompt`,
/// unless taking it would throw away more of its conversation than it reuses; then an empty
/// slot, else the least recently used one. Side requests (another system prompt) thus never
/// take the main conversation's slot while another is free or older.
pub fn choose_slot<T: PartialEq>(slots: &[Slot<T>], prompt: &[T]) -> (usize, usize, usize) {
    let (best, best_common) = slots
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s.common(prompt)))
        .max_by_key(|&(i, c)| (c, slots[i].used))
        .unwrap_or((0, 0));
    let keeps_most = best_common * 2 >= slots[best].tokens.len();
    let target = if keeps_most {
        best
    } else {
        slots
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| (!s.tokens.is_empty(), s.used))
            .map_or(best, |(i, _)| i)
    };
    (target, best, best_common)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(tokens: &[u32], used: u64) -> Slot<u32> {
        Slot {
            tokens: tokens.to_vec(),
            used,
        }
    }

    #[test]
    fn a_conversation_goes_back_to_its_own_slot() {
        let main: Vec<u32> = (0..100).collect();
        let side: Vec<u32> = [0, 1].into_iter().chain(900..910).collect();
        let slots = [slot(&main, 1), slot(&side, 2), slot(&[], 0), slot(&[], 0)];
        // The next turn of the main conversation extends it.
        let next: Vec<u32> = (0..150).collect();
        assert_eq!(choose_slot(&slots, &next), (0, 0, 100));
        // Another side request (shares two tokens of a template with both) takes an empty
        // slot, not the main conversation's.
        let title = [0, 1, 700, 701, 702];
        assert_eq!(choose_slot(&slots, &title).0, 2);
    }

    #[test]
    fn with_every_slot_taken_the_least_recently_used_gives_way() {
        let a: Vec<u32> = (0..100).collect();
        let b: Vec<u32> = (1000..1100).collect();
        let c: Vec<u32> = (2000..2100).collect();
        let d: Vec<u32> = (3000..3100).collect();
        let slots = [slot(&a, 4), slot(&b, 1), slot(&c, 3), slot(&d, 2)];
        let new: Vec<u32> = (5000..5010).collect();
        assert_eq!(choose_slot(&slots, &new).0, 1);
        // A prompt that keeps half a conversation (an edited history) stays in it.
        let edited: Vec<u32> = (0..50).chain(9000..9010).collect();
        assert_eq!(choose_slot(&slots, &edited), (0, 0, 50));
        // One that keeps less goes elsewhere, told which slot's prefix to copy.
        let forked: Vec<u32> = (0..30).chain(9000..9010).collect();
        assert_eq!(choose_slot(&slots, &forked), (1, 0, 30));
    }
}
