"""A pure-Python block manager of vLLM's design, the baseline of bench_python.py.

Written here after the design vLLM's v1 `block_pool.py` / `kv_cache_utils.py` describe (not
copied): every physical block is a KVCacheBlock object with a reference count and prev/next links;
free blocks form a doubly linked FreeKVCacheBlockQueue with sentinel ends (O(1) popleft, append
and remove from the middle); a manager keeps a dict of block tables (request id -> list of
blocks) and token counts. Sharing (fork) bumps reference counts; append copies a shared, partly
filled last block (copy-on-write), as pkv does, so both do the same work per call.
"""


class KVCacheBlock:
    __slots__ = ("block_id", "ref_cnt", "prev_free", "next_free")

    def __init__(self, block_id):
        self.block_id = block_id
        self.ref_cnt = 0
        self.prev_free = None
        self.next_free = None


class FreeKVCacheBlockQueue:
    """Doubly linked list of free blocks, between two sentinel blocks."""

    def __init__(self, blocks):
        self.num_free_blocks = len(blocks)
        self.head = KVCacheBlock(-1)
        self.tail = KVCacheBlock(-1)
        prev = self.head
        for b in blocks:
            prev.next_free = b
            b.prev_free = prev
            prev = b
        prev.next_free = self.tail
        self.tail.prev_free = prev

    def popleft(self):
        b = self.head.next_free
        if b is self.tail:
            raise ValueError("no free blocks")
        self.head.next_free = b.next_free
        b.next_free.prev_free = self.head
        b.prev_free = b.next_free = None
        self.num_free_blocks -= 1
        return b

    def popleft_n(self, n):
        if n > self.num_free_blocks:
            raise ValueError("not enough free blocks")
        out = []
        b = self.head.next_free
        for _ in range(n):
            out.append(b)
            nxt = b.next_free
            b.prev_free = b.next_free = None
            b = nxt
        self.head.next_free = b
        b.prev_free = self.head
        self.num_free_blocks -= n
        return out

    def remove(self, b):
        b.prev_free.next_free = b.next_free
        b.next_free.prev_free = b.prev_free
        b.prev_free = b.next_free = None
        self.num_free_blocks -= 1

    def append(self, b):
        last = self.tail.prev_free
        last.next_free = b
        b.prev_free = last
        b.next_free = self.tail
        self.tail.prev_free = b
        self.num_free_blocks += 1


class OutOfBlocks(Exception):
    pass


class PyBlockManager:
    """allocate / append / fork / free over a BlockPool of KVCacheBlocks (one thread)."""

    def __init__(self, num_blocks, block_size):
        self.block_size = block_size
        self.blocks = [KVCacheBlock(i) for i in range(num_blocks)]
        self.free_queue = FreeKVCacheBlockQueue(self.blocks)
        self.req_to_blocks = {}
        self.num_tokens = {}

    def _take(self, n):
        if n > self.free_queue.num_free_blocks:
            raise OutOfBlocks(n, self.free_queue.num_free_blocks)
        got = self.free_queue.popleft_n(n)
        for b in got:
            b.ref_cnt = 1
        return got

    def _release(self, blocks):
        # vLLM frees a request's blocks in reverse so the tail (least reusable) is evicted first.
        for b in reversed(blocks):
            b.ref_cnt -= 1
            if b.ref_cnt == 0:
                self.free_queue.append(b)

    def allocate(self, seq, num_tokens):
        if seq in self.req_to_blocks:
            raise KeyError(f"Sequence S{seq} already exists")
        self.req_to_blocks[seq] = self._take(-(-num_tokens // self.block_size))
        self.num_tokens[seq] = num_tokens

    def append(self, seq, n):
        """Returns (src, dst) block ids to copy (copy-on-write) or None."""
        blocks = self.req_to_blocks[seq]
        old = self.num_tokens[seq]
        new = old + n
        bs = self.block_size
        copy = None
        need = -(-new // bs) - len(blocks)
        if n and old % bs and blocks[-1].ref_cnt > 1:  # shared, partly filled: copy-on-write
            if need + 1 > self.free_queue.num_free_blocks:
                raise OutOfBlocks(need + 1, self.free_queue.num_free_blocks)
            src = blocks[-1]
            dst = self._take(1)[0]
            src.ref_cnt -= 1
            blocks[-1] = dst
            copy = (src.block_id, dst.block_id)
        if need > 0:
            blocks.extend(self._take(need))
        self.num_tokens[seq] = new
        return copy

    def fork(self, src, dst):
        if dst in self.req_to_blocks:
            raise KeyError(f"Destination sequence S{dst} already exists")
        blocks = self.req_to_blocks[src]
        for b in blocks:
            b.ref_cnt += 1
        self.req_to_blocks[dst] = list(blocks)
        self.num_tokens[dst] = self.num_tokens[src]

    def free(self, seq):
        self._release(self.req_to_blocks.pop(seq))
        del self.num_tokens[seq]

    def free_block_count(self):
        return self.free_queue.num_free_blocks

    def used_block_count(self):
        return len(self.blocks) - self.free_queue.num_free_blocks
