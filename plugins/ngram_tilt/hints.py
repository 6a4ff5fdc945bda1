"""Causal n-gram hints, generated incrementally with vectorized numpy (no compiled extension).

A re-implementation of the semantics of PR #1420 / #1514's ``ContextMixer::get_hints_batch`` (the
causally fixed kernel): for each position ``p`` of the stream, in order, (a) look up candidate hints
from tables built from positions before ``p`` only, (b) emit ``hint[p], beta[p]``, (c) then insert
``tokens[p]``. Three experts:

* **token**: contexts of the previous ``k`` tokens for the active orders ``k`` (8..16, every
  ``order_stride``-th), hashed ``H_k = XOR_j tokens[p-1-j] * PRIMES[j]``; from the highest order
  down, the first context whose running best token has ``conf = best_count / count >= thr_k`` and
  ``count >= min_k`` gives the hint, ``beta = base_beta * conf``;
* **within-word**: the tokens of the current word so far (a prefix hash and its length), only
  while the previous token continues a word; ``beta = within_beta``;
* **word-start**: the previous four complete words, only after a word-start token;
  ``beta = word_beta``.

Candidates that agree with another get ``+agree_bonus``; the largest beta wins (ties: token, then
within, then word). Each table keeps, per context, its count and an approximate running argmax
(``best_tok``, ``best_count``): a token takes the lead only when its own count (a pair table)
strictly exceeds the leader's.

How it is vectorized: a block of positions becomes a list of *events* (key, token, lookup?,
update?) per table; one stable sort groups the events by key while keeping their order, and the
sequential update rule reduces to segmented prefix operations: the leader's count after an update
is the running maximum of the pair counts (a segmented cumulative maximum), and the leader is the
token of the last update that raised it. State persists across blocks in open-addressing hash
indexes probed with vectorized rounds, so hints can be produced step by step as the scoring pass
reveals the prefix. Keys are exact 64-bit hashes: unlike the C++ tables (2^26 slots, at most 16
probes, 16-bit best counts) nothing is dropped or capped. With ``lazy_orders=False`` the hints
equal a literal port of the kernel's rules, and the compiled kernel's except at a handful of
positions where it gives no hint (5 of 1.2M FineWeb tokens; the port with 16-bit counts agrees
with golf there, so the cause lies in the kernel's bounded tables). ``lazy_orders=True`` (the
default, about 3x faster) also differs where the kernel hints from a collision of its weak context
hash (see :meth:`HintGenerator._token_expert`; 3 positions per million on FineWeb).
"""

from __future__ import annotations

import numpy as np

U64 = np.uint64
PRIMES = np.array(
    [36313, 27191, 51647, 81929, 131071, 196613, 262147, 393241, 524309, 655373, 786433, 917521, 1048583,
     1179653, 1310729, 1441801, 1572869, 1703941, 1835017, 1966087, 2097169, 2228243, 2359319, 2490389,
     2621471, 2752549, 2883617, 3014687, 3145757, 3276833, 3407903, 3538973],
    dtype=U64,
)
PAIR_MIX = U64(1000003)
PREFIX_BASE = U64(1099511628211)
LEN_MIX = U64(0x9E3779B185EBCA87)
TABLE_MIX = U64(0x9E3779B97F4A7C15)
EMPTY = U64(0xFFFFFFFFFFFFFFFF)
# Salt that keeps the orders' contexts apart in the one token table (the kernel has one table
# per order; an exact-key table only needs the keys distinct).
ORDER_SALT = U64(0xD6E8FEB86659FD93)
WORD_ORDER = 4


class KeyIndex:
    """Exact ``uint64 key -> dense id`` map: open addressing, linear probing in vectorized rounds.

    Ids are handed out in insertion order, so value arrays indexed by id never move; the slot
    table (key and id side by side: one cache line per probe) doubles, rehashing, before its load
    passes ``max_load``. A batch may repeat a key: racing claims of one empty slot are settled by
    scattering the claimants' indices into the slot (one write survives) and reading them back;
    the losers re-read the slot next round.
    """

    def __init__(self, bits: int = 12, max_load: float = 0.6) -> None:
        self.bits = bits
        self.max_load = max_load
        self.table = self._empty(bits)
        self.size = 0

    @staticmethod
    def _empty(bits: int) -> np.ndarray:
        table = np.empty(2 << bits, dtype=U64)  # [key0, id0, key1, id1, ...]
        table[0::2] = EMPTY
        return table

    def reserve(self, n: int) -> None:
        """Make room for ``n`` keys in total without growing again."""
        if n > self.max_load * (1 << self.bits):
            self._grow(n)

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        return ((keys * TABLE_MIX) >> U64(64 - self.bits)).view(np.int64)

    def _probe(self, keys: np.ndarray, insert: bool, given_ids: np.ndarray | None = None) -> np.ndarray:
        out = np.empty(keys.size, dtype=np.int64)
        slot = self._slots(keys)
        pending = np.arange(keys.size)
        mask = (1 << self.bits) - 1
        table = self.table
        while pending.size:
            s = slot[pending]
            at = s << 1
            k = keys[pending]
            cur = table[at]
            hit = cur == k
            out[pending[hit]] = table[at[hit] + 1].astype(np.int64)
            empty = cur == EMPTY
            done = hit.copy()
            if not insert:
                out[pending[empty]] = -1
                done |= empty
            elif empty.any():
                e = np.flatnonzero(empty)
                eat = at[e] + 1
                table[eat] = e  # claim: one of the racing writes survives
                w = e[table[eat] == e.astype(U64)]
                wat = at[w]
                new = given_ids[pending[w]] if given_ids is not None else np.arange(self.size, self.size + w.size)
                table[wat] = k[w]
                table[wat + 1] = new
                out[pending[w]] = new
                if given_ids is None:
                    self.size += w.size
                done[w] = True
            occupied = ~(hit | empty)
            slot[pending[occupied]] = (s[occupied] + 1) & mask
            pending = pending[~done]
        return out

    def get_or_add(self, keys: np.ndarray) -> np.ndarray:
        """Ids of ``keys`` (``uint64``, repeats allowed), inserting the new ones."""
        self.reserve(self.size + keys.size)
        return self._probe(keys, insert=True)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Ids of ``keys``, ``-1`` for keys never inserted."""
        return self._probe(keys, insert=False)

    def _grow(self, needed: int) -> None:
        bits = self.bits
        while needed > self.max_load * (1 << bits):
            bits += 1
        live = np.flatnonzero(self.table[0::2] != EMPTY) << 1
        old_keys, old_ids = self.table[live], self.table[live + 1].astype(np.int64)
        self.bits = bits
        self.table = self._empty(bits)
        self._probe(old_keys, insert=True, given_ids=old_ids)


def _grown(a: np.ndarray, n: int, fill=0) -> np.ndarray:
    if n <= a.size:
        return a
    out = np.full(max(n, 2 * a.size), fill, dtype=a.dtype)
    out[: a.size] = a
    return out


def _sort(values: np.ndarray) -> np.ndarray:
    """Ascending sort of distinct int64 composites (numpy's SIMD quicksort; no argsort needed)."""
    return np.sort(values)


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run starts of a sorted array and each element's run number."""
    new = np.empty(sorted_keys.size, dtype=bool)
    new[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new[1:])
    return np.flatnonzero(new), np.cumsum(new) - 1


def _seg_cummax(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Cumulative maximum restarting at each group (``group`` sorted ascending, values < 2**32)."""
    shift = group.astype(np.int64) << 32
    return np.maximum.accumulate(shift + values) - shift


LOW32 = (1 << 32) - 1
# Events per table step: composites pack (group << 40 | token << 23 | index).
MAX_EVENTS = 1 << 23


class CountTable:
    """Contexts -> (count, leader token, leader count), processed as ordered event lists.

    The leader's own pair count always equals the leader count, so pair counts are stored only
    for tokens that are not their context's leader (written when a token ends a block behind the
    leader, or loses the lead): most contexts, seen once, never touch the pair table.
    """

    def __init__(self) -> None:
        self.ctx = KeyIndex()
        self.pairs = KeyIndex()
        # int32: counts and positions of a 40M-token stream fit, at half the memory.
        self.count = np.zeros(1 << 12, dtype=np.int32)
        self.best = np.full(1 << 12, -1, dtype=np.int32)
        self.best_count = np.zeros(1 << 12, dtype=np.int32)
        self.pair_count = np.zeros(1 << 12, dtype=np.int32)
        self.first = np.full(1 << 12, -1, dtype=np.int32)  # time of the context's first insertion
        self.expanded = np.zeros(1 << 12, dtype=bool)  # first occurrence copied to the next order

    def reserve(self, contexts: int) -> None:
        self.ctx.reserve(contexts)

    @staticmethod
    def _pair_keys(ctx_keys: np.ndarray, toks: np.ndarray) -> np.ndarray:
        return (ctx_keys * PAIR_MIX) ^ (toks.astype(U64) * PRIMES[0] + U64(1))

    def step(self, keys, toks, look, upd, lookup_first: bool = True, times=None):
        """Process events in array order; return what each lookup event sees.

        Event ``i`` has context ``keys[i]`` and token ``toks[i]``; it looks the context up
        (``look[i]``) and inserts its token (``upd[i]``), lookup first unless ``lookup_first`` is
        false. ``times[i]`` (default ``i``) is recorded as the time of a context's first insertion.
        Returns ``(best, best_count, count, first, ctx_id)`` per event: the leader, its count and
        the context's count at the lookup, the time of its first insertion and its id; non-lookup
        events get ``best = -1, count = 0, first = -1, ctx_id = -1``.
        """
        n = keys.size
        times = np.arange(n) if times is None else times
        best_out = np.full(n, -1, dtype=np.int64)
        bc_out = np.zeros(n, dtype=np.int64)
        cnt_out = np.zeros(n, dtype=np.int64)
        first_out = np.full(n, -1, dtype=np.int64)
        id_out = np.full(n, -1, dtype=np.int64)
        result = (best_out, bc_out, cnt_out, first_out, id_out)
        act = np.flatnonzero(look | upd)
        if act.size == 0:
            return result
        if act.size >= MAX_EVENTS:
            raise ValueError(f"{act.size} events in one step; split the block")
        first_new = self.ctx.size
        ids = self.ctx.get_or_add(keys[act])
        need = self.ctx.size
        self.count = _grown(self.count, need)
        self.best = _grown(self.best, need, -1)
        self.best_count = _grown(self.best_count, need)
        self.first = _grown(self.first, need, -1)
        self.expanded = _grown(self.expanded, need, False)
        lk_act = look[act]
        id_out[act[lk_act]] = ids[lk_act]
        # Fast path: a context first seen in this block, by this one event (most high-order
        # contexts): nothing to look up, and an insertion makes it (1, token, 1).
        fresh = ids >= first_new
        seen = np.bincount(ids[fresh] - first_new, minlength=need - first_new)
        single = np.zeros(act.size, dtype=bool)
        single[fresh] = seen[ids[fresh] - first_new] == 1
        if single.any():
            sev, sid = act[single], ids[single]
            su = upd[sev]
            self.count[sid[su]] = 1
            self.best[sid[su]] = toks[sev[su]]
            self.best_count[sid[su]] = 1
            self.first[sid[su]] = times[sev[su]]
            if not lookup_first:
                sl = sev[look[sev] & su]
                best_out[sl], bc_out[sl], cnt_out[sl], first_out[sl] = toks[sl], 1, 1, times[sl]
            keep = ~single
            act, ids = act[keep], ids[keep]
            if act.size == 0:
                return result
        comp = _sort((ids << 32) | np.arange(act.size))
        ev = act[comp & LOW32]
        gstart, gid = _runs(comp >> 32)
        gids = ids[(comp & LOW32)[gstart]]
        c0, b0, m0 = self.count[gids], self.best[gids], self.best_count[gids]
        u = upd[ev]
        t = toks[ev]
        ks = keys[ev]
        # Pair count before the block: the leader's is the leader count, others from the table.
        leader = t == b0[gid]
        base = np.where(leader, m0[gid], 0)
        ask = np.flatnonzero(u & ~leader & (c0[gid] > 0))
        if ask.size:
            found = self.pairs.find(self._pair_keys(ks[ask], t[ask]))
            base[ask] = np.where(found >= 0, self.pair_count[np.maximum(found, 0)], 0)
        # Earlier updates of the same (context, token) in this block.
        ups = np.cumsum(u)
        per_group = np.add.reduceat(u.astype(np.int64), gstart)
        rank = np.zeros(ev.size, dtype=np.int64)
        last_of_pair = u.copy()  # the last update of its (context, token) in the block
        multi = np.flatnonzero(u & (per_group[gid] > 1))
        if multi.size:
            comp2 = _sort((gid[multi] << 40) | (t[multi] << 23) | np.arange(multi.size))
            pstart, prun = _runs(comp2 >> 23)
            at = multi[comp2 & ((1 << 23) - 1)]
            rank[at] = np.arange(at.size) - pstart[prun]
            pend = np.append(pstart[1:], at.size) - 1
            last_of_pair[at] = False
            last_of_pair[at[pend]] = True
        c = np.where(u, base + rank + 1, 0)
        # Leader count after each event: running max of the pair counts (and the stored one);
        # the leader: the token of the last update that raised it (ties keep the incumbent).
        m_after = np.maximum(_seg_cummax(c, gid), m0[gid])
        m_before = np.empty_like(m_after)
        m_before[1:] = m_after[:-1]
        m_before[gstart] = m0
        raised = u & (m_after > m_before)
        last = np.maximum.accumulate(np.where(raised, np.arange(ev.size), -1))
        best_after = np.where(last >= gstart[gid], t[np.maximum(last, 0)], b0[gid])
        best_before = np.empty_like(best_after)
        best_before[1:] = best_after[:-1]
        best_before[gstart] = b0
        cnt_after = c0[gid] + ups - (ups[gstart] - u[gstart])[gid]
        # First insertion time: stored for old contexts, else this block's first update.
        made = u & (c0[gid] == 0) & (cnt_after == 1)
        first_g = self.first[gids].copy()
        first_g[gid[made]] = times[ev[made]]
        lk = look[ev]
        cnt_seen = (cnt_after - u if lookup_first else cnt_after)[lk]
        best_out[ev[lk]] = (best_before if lookup_first else best_after)[lk]
        bc_out[ev[lk]] = (m_before if lookup_first else m_after)[lk]
        cnt_out[ev[lk]] = cnt_seen
        first_out[ev[lk]] = np.where(cnt_seen > 0, first_g[gid[lk]], -1)
        gend = np.append(gstart[1:], ev.size) - 1
        final = best_after[gend]
        self.first[gids] = first_g
        self.count[gids] = cnt_after[gend]
        self.best[gids] = final
        self.best_count[gids] = m_after[gend]
        # Pair counts that stop being derivable: tokens behind the leader, and displaced leaders.
        write = np.flatnonzero(last_of_pair & u & (t != final[gid]))
        pk, pv = self._pair_keys(ks[write], t[write]), c[write]
        lost = np.flatnonzero((b0 >= 0) & (final != b0))
        if lost.size:
            b0_updates = np.add.reduceat((u & leader).astype(np.int64), gstart)
            pk = np.concatenate([pk, self._pair_keys(ks[gstart[lost]], b0[lost])])
            pv = np.concatenate([pv, m0[lost] + b0_updates[lost]])
        if pk.size:
            pid = self.pairs.get_or_add(pk)
            self.pair_count = _grown(self.pair_count, self.pairs.size)
            self.pair_count[pid] = pv
        return result


class HintGenerator:
    """Incremental n-gram hints over one token stream (see the module docstring).

    ``advance(tokens, end)`` makes the hints of positions up to ``end`` available (a position is a
    token index; the hint of position ``p`` predicts ``tokens[p]`` from ``tokens[:p]``) reading only
    ``tokens[:end]``: position ``end`` is looked up now and its token inserted on the next call.
    ``hints(lo, hi)`` returns them.
    """

    def __init__(
        self,
        has_leading_space: np.ndarray,
        is_boundary: np.ndarray,
        *,
        base_beta: float = 2.0,
        agree_bonus: float = 0.1,
        within_threshold: float = 0.25,
        within_beta: float = 0.0,
        word_threshold: float = 0.8,
        word_beta: float = 0.0,
        min_order: int = 8,
        max_order: int = 16,
        order_stride: int = 2,
        thresholds: tuple[float, ...] = (0.7, 0.7, 0.7, 0.6, 0.6, 0.6, 0.5, 0.5, 0.5),
        min_counts: tuple[int, ...] = (3, 3, 3, 2, 2, 2, 2, 2, 2),
        threshold_scale: float = 1.0,
        experts: tuple[str, ...] = ("token", "within", "word"),
        lazy_orders: bool = True,
        expected_positions: int = 0,
    ) -> None:
        self.ws_lut = np.asarray(has_leading_space, dtype=bool)
        self.bnd_lut = np.asarray(is_boundary, dtype=bool)
        self.base_beta, self.agree_bonus = base_beta, agree_bonus
        self.within_threshold, self.within_beta = within_threshold, within_beta
        self.word_threshold, self.word_beta = word_threshold, word_beta
        self.orders = [k for k in range(min_order, max_order + 1) if (k - min_order) % order_stride == 0]
        self.max_order = max_order
        self.thr = {k: thresholds[k - min_order] * threshold_scale for k in self.orders}
        self.min_count = {k: min_counts[k - min_order] for k in self.orders}
        self.experts = tuple(experts)
        self.lazy_orders = lazy_orders
        self.token_table = CountTable()
        if expected_positions:
            # Exact: every order inserts at every position; lazy: mostly the lowest order (the
            # higher ones only where it recurs), so twice the positions covers it on FineWeb.
            self.token_table.reserve(expected_positions * (2 if lazy_orders else len(self.orders)))
        self.within_table = CountTable()
        self.word_table = CountTable()
        self.cursor = 1  # the next position to insert (the kernel starts at position 1)
        self.started = False
        # Word segmentation state after the last inserted position: tokens in the current word.
        self.seg_len = 0
        self.within_hash = U64(0)  # prefix hash of the current word (within-word expert)
        self.word_hash = U64(0)  # polynomial hash of the current word (word-start expert)
        self.ring = np.zeros(0, dtype=U64)  # the last (up to) four complete words, oldest first
        self.fill = 0  # complete words so far
        self.hint = np.full(1 << 16, -1, dtype=np.int64)
        self.beta = np.zeros(1 << 16, dtype=np.float64)

    # ---- experts on one block: lookups at positions `pos`, insertions at `pos[:-1]` ------------

    def _context_keys(self, toks: np.ndarray, at: np.ndarray, k: int) -> np.ndarray:
        """Order-``k`` context keys of arbitrary positions ``at`` (all ``>= k``)."""
        h = np.zeros(at.size, dtype=U64)
        for j in range(k):
            h ^= toks[at - 1 - j].astype(U64) * PRIMES[j % 32]
        return h ^ U64((k * int(ORDER_SALT)) & 0xFFFFFFFFFFFFFFFF)

    def _token_expert(self, toks: np.ndarray, pos: np.ndarray):
        """The token expert, order by order from the lowest.

        With ``lazy_orders``: a context of order k' > k can only have been seen before position p
        if p's order-k context has, so order k' is processed only at those positions, and the
        order-k' context of the first occurrence q of an order-k context is inserted (with time q)
        when that order-k context occurs a second time, before anything can look it up. Exact for
        exact contexts, at a fraction of the events; but the kernel's context hash (an XOR of
        token x prime products, about 35 significant bits) lets an order-k' context collide with
        an unrelated one where the order-k context does not: the kernel then hints from the
        collision (15 of 390K positions on the sample corpus) and the lazy path does not.
        """
        n = pos.size
        lo = int(pos[0])
        cur = toks[np.minimum(pos, toks.size - 1)].astype(np.int64)
        can_update = pos < toks.size
        # Contiguous positions: the j-th previous tokens are a slice of the (zero-padded) stream.
        pad = self.max_order
        start = max(lo - 1 - pad, 0)
        window = np.zeros(pad + toks.size - start, dtype=U64)
        window[pad:] = toks[start:]
        base = pad + (lo - 1) - start  # index in `window` of token lo - 1
        h = np.zeros(n, dtype=U64)
        keys = {}
        for j in range(self.max_order):
            h ^= window[base - j : base - j + n] * PRIMES[j % 32]
            if j + 1 in self.thr:
                keys[j + 1] = h ^ U64(((j + 1) * int(ORDER_SALT)) & 0xFFFFFFFFFFFFFFFF)
        table = self.token_table
        hint = np.full(n, -1, dtype=np.int64)
        beta = np.zeros(n, dtype=np.float64)
        found = []
        prev = None
        for k in self.orders:
            avail = pos >= k
            if prev is None or not self.lazy_orders:
                sel = np.flatnonzero(avail)
                q = np.zeros(0, dtype=np.int64)
            else:
                p_cnt, p_first, p_id, p_table = prev
                sel = np.flatnonzero(avail & (p_cnt >= 1))
                second = np.flatnonzero((p_cnt == 1) & avail)
                second = second[~p_table.expanded[p_id[second]]]
                p_table.expanded[p_id[second]] = True
                q = p_first[second]
                q = q[q >= k]
            ev_t = np.concatenate([pos[sel], q])
            ev_k = np.concatenate([keys[k][sel], self._context_keys(toks, q, k)])
            ev_tok = np.concatenate([cur[sel], toks[q]])
            ev_l = np.concatenate([np.ones(sel.size, dtype=bool), np.zeros(q.size, dtype=bool)])
            ev_u = np.concatenate([can_update[sel], np.ones(q.size, dtype=bool)])
            if q.size:
                o = np.argsort(ev_t, kind="stable")
                ev_t, ev_k, ev_tok, ev_l, ev_u = ev_t[o], ev_k[o], ev_tok[o], ev_l[o], ev_u[o]
                back = np.empty(o.size, dtype=np.int64)
                back[o] = np.arange(o.size)
                where = back[: sel.size]
            else:
                where = np.arange(sel.size)
            best, bc, cnt, first, ids = table.step(ev_k, ev_tok, ev_l, ev_u, times=ev_t)
            full = [np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64),
                    np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)]
            for arr, val in zip(full, (best, bc, cnt, first, ids)):
                arr[sel] = val[where]
            found.append((k, full[0], full[1], full[2]))
            prev = (full[2], full[3], full[4], table)
        done = np.zeros(n, dtype=bool)
        for k, best, bc, c in reversed(found):  # highest order first
            conf = np.divide(bc, c, out=np.zeros(n), where=c > 0)
            ok = ~done & (best >= 0) & (c >= max(self.min_count[k], 1)) & (conf >= self.thr[k])
            hint[ok] = best[ok]
            beta[ok] = self.base_beta * conf[ok]
            done |= ok
        return hint, beta

    def _segments(self, cur: np.ndarray):
        """Word segmentation of the inserted tokens ``cur``: boundary, word-start flags, and each
        token's offset in its word (the number of word tokens before it)."""
        bnd = self.bnd_lut[cur]
        ws = self.ws_lut[cur]
        n = cur.size
        prev_empty = np.empty(n, dtype=bool)
        prev_empty[1:] = bnd[:-1]
        prev_empty[:1] = self.seg_len == 0
        start = ~bnd & (ws | prev_empty)
        idx = np.arange(n)
        anchor = np.maximum.accumulate(np.where(start | bnd, idx, -1))
        offset = np.where(anchor >= 0, idx - anchor, idx + self.seg_len)
        length = np.where(bnd, 0, offset + 1)  # word tokens after inserting each token
        return bnd, ws, start, offset, length

    @staticmethod
    def _chain(start_value: np.ndarray, cont: np.ndarray, offset: np.ndarray, carried, step) -> np.ndarray:
        """Values along words: ``start_value`` where a word starts (or a boundary), else
        ``step(previous value, i)`` continuing from the position before (``carried`` before the block)."""
        h = start_value.copy()
        at_all = np.flatnonzero(cont)
        if at_all.size:
            offs = offset[at_all]
            for k in np.unique(offs):  # a word's tokens have increasing offsets: in order
                at = at_all[offs == k]
                prev = np.where(at > 0, h[np.maximum(at - 1, 0)], carried)
                h[at] = step(prev, at)
        return h

    def _within_expert(self, toks, pos, seg) -> np.ndarray:
        n = pos.size
        cur_all = toks[np.minimum(pos, toks.size - 1)].astype(U64)
        bnd, ws, start, offset, length = seg
        m = n - 1  # inserted positions
        cur = cur_all[:m]
        cont = ~bnd & ~start
        first = np.where(start, (cur + U64(1)) * PRIMES[0], U64(0)).astype(U64)
        h_after = self._chain(
            first, cont, offset, self.within_hash,
            lambda prev, at: (prev * PREFIX_BASE) ^ ((cur[at] + U64(1)) * PRIMES[offset[at] % 32]),
        )
        h_before = np.concatenate([[self.within_hash], h_after]).astype(U64)
        len_before = np.concatenate([[self.seg_len], length]).astype(np.int64)
        key = h_before ^ (len_before.astype(U64) * LEN_MIX)
        prev_tok = toks[pos - 1]
        look = ~self.bnd_lut[prev_tok] & ~self.ws_lut[prev_tok] & (len_before > 0)
        upd = np.concatenate([cont, [False]])
        best, bc, cnt, _, _ = self.within_table.step(key, cur_all.astype(np.int64), look, upd)
        conf = np.divide(bc, cnt, out=np.zeros(n), where=cnt > 0)
        if m:
            self.within_hash = h_after[-1]
        return np.where(look & (best >= 0) & (cnt >= 1) & (conf >= self.within_threshold), best, -1)

    def _word_expert(self, toks, pos, seg) -> np.ndarray:
        n = pos.size
        m = n - 1
        cur = toks[pos[:m]].astype(U64)
        bnd, ws, start, offset, length = seg
        cont = ~bnd & ~start
        wh_after = self._chain(
            np.where(start, cur, U64(0)).astype(U64), cont, offset, self.word_hash,
            lambda prev, at: prev * U64(31) + cur[at],
        )
        wh_before = np.concatenate([[self.word_hash], wh_after[:-1]]).astype(U64) if m else np.zeros(0, dtype=U64)
        len_before = np.concatenate([[self.seg_len], length[:-1]]) if m else np.zeros(0, dtype=np.int64)
        completes = (bnd | start) & (len_before > 0)  # the word before is flushed to the ring
        history = np.concatenate([self.ring, wh_before[completes]]).astype(U64)
        words_after = self.fill + np.cumsum(completes)
        have = ws & start & (words_after >= WORD_ORDER)
        ctx = np.zeros(m, dtype=U64)
        at = np.flatnonzero(have)
        if at.size:
            newest = words_after[at] - self.fill + self.ring.size - 1
            for j in range(WORD_ORDER):
                ctx[at] ^= history[newest - (WORD_ORDER - 1) + j] * PRIMES[j]
        best, bc, cnt, _, _ = self.word_table.step(ctx, cur.astype(np.int64), have, have, lookup_first=False)
        conf = np.divide(bc, cnt, out=np.zeros(m), where=cnt > 0)
        out = np.full(n, -1, dtype=np.int64)
        # The lookup right after inserting position p is the hint of position p + 1.
        out[1:] = np.where(have & (best >= 0) & (cnt >= 3) & (conf >= self.word_threshold), best, -1)
        if m:
            self.word_hash = wh_after[-1]
            self.fill = int(words_after[-1])
            self.ring = history[-WORD_ORDER:].copy()
        return out

    # ---- driving ---------------------------------------------------------------------------------

    def advance(self, tokens: np.ndarray, end: int) -> None:
        """Produce the hints of positions up to ``end``, reading ``tokens[:end]`` only."""
        while end - self.cursor > self.block:
            self._advance(tokens, self.cursor + self.block)
        self._advance(tokens, end)

    # Positions per internal block: bounds the token table's events (orders x positions).
    block = 1 << 20

    def _advance(self, tokens: np.ndarray, end: int) -> None:
        lo = self.cursor
        if end < lo or (self.started and end == lo):
            return
        toks = np.asarray(tokens[:end], dtype=np.int64)
        pos = np.arange(lo, end + 1)  # looked up; all but `end` are inserted
        hint, beta = self._token_expert(toks, pos)
        if "within" in self.experts or "word" in self.experts:
            seg = self._segments(toks[pos[:-1]])
            cands = [(hint, beta)]
            if "within" in self.experts:
                cands.append((self._within_expert(toks, pos, seg), np.full(pos.size, self.within_beta)))
            if "word" in self.experts:
                cands.append((self._word_expert(toks, pos, seg), np.full(pos.size, self.word_beta)))
            if pos.size > 1:
                self.seg_len = int(seg[4][-1])
            hint, beta = _combine(cands, self.agree_bonus)
        # Position `lo` was already looked up as the last position of the previous call, which
        # also held its word-start hint (made when its predecessor was inserted): keep that one.
        skip = 1 if self.started else 0
        self._store(lo + skip, hint[skip:], beta[skip:])
        self.started = True
        self.cursor = end

    def _store(self, lo: int, hint: np.ndarray, beta: np.ndarray) -> None:
        hi = lo + hint.size
        if hi > self.hint.size:
            self.hint = _grown(self.hint, hi, -1)
            self.beta = _grown(self.beta, hi, 0.0)
        self.hint[lo:hi] = hint
        self.beta[lo:hi] = beta

    def hints(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Hints and betas of positions ``[lo, hi)`` (produced by ``advance``; position 0 has none)."""
        if hi - 1 > self.cursor or not self.started:
            raise ValueError(f"hints up to position {hi - 1} requested but only up to {self.cursor} are produced")
        return self.hint[lo:hi], self.beta[lo:hi]


def _combine(cands: list[tuple[np.ndarray, np.ndarray]], agree_bonus: float) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's vote: +agree_bonus for a candidate another one agrees with; largest beta wins."""
    hints = np.stack([h for h, _ in cands])
    betas = np.stack([np.where(h >= 0, b, -np.inf) for h, b in cands])
    present = hints >= 0
    k = len(cands)
    for a in range(k):
        agrees = np.zeros(hints.shape[1], dtype=bool)
        for b in range(k):
            if b != a:
                agrees |= present[b] & (hints[b] == hints[a])
        betas[a] = np.where(present[a] & agrees, betas[a] + agree_bonus, betas[a])
    win = np.argmax(betas, axis=0)  # first of the maxima: token, then within, then word
    cols = np.arange(hints.shape[1])
    hint = np.where(present.any(axis=0), hints[win, cols], -1)
    beta = np.where(hint >= 0, betas[win, cols], 0.0)
    return hint, beta
