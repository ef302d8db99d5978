//! Several items in one broker message: the broker's cost is per message
//! (store, deliver, acknowledge), so under load the publisher packs up to
//! [`PACK_ITEMS`] items into one. A message of one item is the item's
//! bytes alone, so other programs can publish to a bridged queue and read
//! from it; a pack carries its item count beside it (the backend's header)
//! and frames each item as a 4-byte little-endian length and its bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::backend::Outgoing;

/// Most items in one message.
pub(crate) const PACK_ITEMS: usize = 64;

/// Most bytes of items in one message (a single larger item goes alone).
pub(crate) const PACK_BYTES: usize = 64 << 10;

/// One item waiting for the broker, numbered in enqueue order.
pub(crate) struct Waiting {
    pub seq: u64,
    pub data: Bytes,
}

/// A message ready to publish, and what it holds.
#[derive(Clone)]
pub(crate) struct Pack {
    pub message: Outgoing,
    /// Its items' cost in the buffer's accounting.
    pub cost: usize,
}

/// Packs `items`, in order, into as few messages as the limits allow. A
/// message's id is made of `nonce` and its first item's number, so a pack
/// sent again is the same message to the broker.
pub(crate) fn pack(nonce: u64, items: Vec<Waiting>, cost_of: impl Fn(&Bytes) -> usize) -> Vec<Pack> {
    let mut packs = Vec::new();
    let mut group: Vec<Waiting> = Vec::new();
    let mut group_bytes = 0;
    for item in items {
        if !group.is_empty() && (group.len() == PACK_ITEMS || group_bytes + item.data.len() > PACK_BYTES) {
            packs.push(seal(nonce, std::mem::take(&mut group), &cost_of));
            group_bytes = 0;
        }
        group_bytes += item.data.len();
        group.push(item);
    }
    if !group.is_empty() {
        packs.push(seal(nonce, group, &cost_of));
    }
    packs
}

fn seal(nonce: u64, group: Vec<Waiting>, cost_of: &impl Fn(&Bytes) -> usize) -> Pack {
    let id = format!("{nonce:016x}-{}", group[0].seq);
    let cost = group.iter().map(|w| cost_of(&w.data)).sum();
    let items = group.len() as u32;
    let payload = if group.len() == 1 {
        group.into_iter().next().map(|w| w.data).unwrap_or_default()
    } else {
        let mut framed = BytesMut::with_capacity(group.iter().map(|w| 4 + w.data.len()).sum());
        for w in group {
            framed.put_u32_le(w.data.len() as u32);
            framed.put_slice(&w.data);
        }
        framed.freeze()
    };
    Pack { message: Outgoing { id, payload, items }, cost }
}

/// The items of a message that says it holds `items` of them; `None` when
/// its framing does not add up (then it is one item, as published).
pub(crate) fn unpack(payload: &Bytes, items: u32) -> Option<Vec<Bytes>> {
    if items <= 1 {
        return Some(vec![payload.clone()]);
    }
    let mut out = Vec::with_capacity(items as usize);
    let mut at = 0;
    while at < payload.len() {
        let len = u32::from_le_bytes(payload.get(at..at + 4)?.try_into().ok()?) as usize;
        let end = at.checked_add(4 + len).filter(|&end| end <= payload.len())?;
        out.push(payload.slice(at + 4..end));
        at = end;
    }
    (out.len() == items as usize).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(seq: u64, data: &'static [u8]) -> Waiting {
        Waiting { seq, data: Bytes::from_static(data) }
    }

    #[test]
    fn items_are_packed_in_order_and_come_out_as_they_went_in() {
        let items: Vec<Waiting> = (0..150).map(|i| waiting(i, if i % 2 == 0 { b"even" } else { b"" })).collect();
        let packs = pack(7, items, |b| b.len() + 64);
        assert_eq!(packs.iter().map(|p| p.message.items).collect::<Vec<_>>(), [64, 64, 22]);
        assert_eq!(packs[1].message.id, "0000000000000007-64");
        assert_eq!(packs[0].cost, 32 * 4 + 64 * 64);
        let back: Vec<Bytes> =
            packs.iter().flat_map(|p| unpack(&p.message.payload, p.message.items).unwrap()).collect();
        assert_eq!(back.len(), 150);
        assert!(back.iter().enumerate().all(|(i, b)| b.as_ref() == if i % 2 == 0 { &b"even"[..] } else { b"" }));
    }

    #[test]
    fn one_item_is_its_own_bytes_and_a_large_item_goes_alone() {
        let big = Bytes::from(vec![1u8; PACK_BYTES]);
        let items = vec![waiting(1, b"a"), Waiting { seq: 2, data: big.clone() }, waiting(3, b"b")];
        let packs = pack(0, items, |b| b.len());
        assert_eq!(packs.len(), 3);
        assert_eq!(packs[0].message.payload, "a");
        assert_eq!(packs[1].message.payload, big);
        assert_eq!(unpack(&packs[2].message.payload, 1).unwrap(), [Bytes::from_static(b"b")]);
    }

    #[test]
    fn a_pack_whose_framing_does_not_add_up_is_not_unpacked() {
        let packs = pack(0, vec![waiting(1, b"ab"), waiting(2, b"cd")], |b| b.len());
        let payload = &packs[0].message.payload;
        assert_eq!(unpack(payload, 3), None);
        assert_eq!(unpack(&payload.slice(..payload.len() - 1), 2), None);
        assert_eq!(unpack(&Bytes::from_static(b"\xff\xff\xff\xff"), 2), None);
    }
}
