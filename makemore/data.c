/* data.py's loops over every word or character, in C, for large word files (a Python loop over millions of them
   takes seconds): the lecture's shuffle and the contexts. Built and loaded by native.py; data.py falls back to
   Python and numpy, with the same results, where it cannot be built.

   lecture_shuffle: CPython's random.shuffle, the same permutation.

   CPython's shuffle: for i = n-1 down to 1, j = randbelow(i + 1), swap x[i] and x[j]; randbelow(m) draws
   getrandbits(k) = genrand_uint32() >> (32 - k), k = bit length of m, until it is below m. genrand_uint32 is the
   reference Mersenne Twister (MT19937), whose state random.getstate() gives: 624 words and the index. */
#include <stdint.h>
#include <omp.h>

#define MT_N 624
#define MT_M 397

static uint32_t genrand_uint32(uint32_t *mt, int *index) {
    static const uint32_t mag01[2] = {0x0U, 0x9908b0dfU};
    uint32_t y;
    if (*index >= MT_N) {
        int kk;
        for (kk = 0; kk < MT_N - MT_M; kk++) {
            y = (mt[kk] & 0x80000000U) | (mt[kk + 1] & 0x7fffffffU);
            mt[kk] = mt[kk + MT_M] ^ (y >> 1) ^ mag01[y & 0x1U];
        }
        for (; kk < MT_N - 1; kk++) {
            y = (mt[kk] & 0x80000000U) | (mt[kk + 1] & 0x7fffffffU);
            mt[kk] = mt[kk + (MT_M - MT_N)] ^ (y >> 1) ^ mag01[y & 0x1U];
        }
        y = (mt[MT_N - 1] & 0x80000000U) | (mt[0] & 0x7fffffffU);
        mt[MT_N - 1] = mt[MT_M - 1] ^ (y >> 1) ^ mag01[y & 0x1U];
        *index = 0;
    }
    y = mt[(*index)++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680U;
    y ^= (y << 15) & 0xefc60000U;
    y ^= (y >> 18);
    return y;
}

/* mt: the 624 state words (changed in place), index: the state's index; perm: n entries, permuted as
   random.shuffle permutes a list (n below 2^32). */
void lecture_shuffle(uint32_t *mt, int index, int64_t *perm, int64_t n) {
    for (int64_t i = n - 1; i >= 1; i--) {
        uint64_t m = (uint64_t)i + 1;
        int k = 64 - __builtin_clzll(m);
        uint64_t r;
        do {
            r = genrand_uint32(mt, &index) >> (32 - k);
        } while (r >= m);
        int64_t t = perm[i];
        perm[i] = perm[r];
        perm[r] = t;
    }
}

/* The lecture's contexts: points are the code points of the words, each followed by a separator; lut maps a code
   point to its index (the separator to 0, the boundary; a point the vocabulary lacks to -1). Every point is a
   target (a character, or a separator: the word's end mark) with the block_size indices before it in its word as
   its context (0 before the word's start). Writes X (n x block_size) and Y (n); returns -1, or the position of the
   first point the vocabulary lacks. */
int64_t build_contexts(const uint32_t *points, int64_t n, const int64_t *lut, int64_t lut_n, int64_t block_size,
                       int64_t *X, int64_t *Y) {
    int64_t ctx[256] = {0}; /* block_size <= 256 (data.py checks) */
    for (int64_t i = 0; i < n; i++) {
        uint32_t p = points[i];
        int64_t c = p < (uint64_t)lut_n ? lut[p] : -1;
        if (c < 0) return i;
        int64_t *x = X + i * block_size;
        for (int64_t j = 0; j < block_size; j++) x[j] = ctx[j];
        Y[i] = c;
        if (c == 0) { /* the end of a word: the next one starts from an empty context */
            for (int64_t j = 0; j < block_size; j++) ctx[j] = 0;
        } else {
            for (int64_t j = 0; j + 1 < block_size; j++) ctx[j] = ctx[j + 1];
            ctx[block_size - 1] = c;
        }
    }
    return -1;
}

/* build_contexts for the words of a split, straight from the code points of all the words (each followed by its
   separator; word w's points are points[starts[w] .. starts[w + 1]]): order lists the split's words, out[k] where
   word order[k]'s targets begin in X and Y. The words are independent: the threads take them in turns. */
int64_t build_split_contexts(const uint32_t *points, const int64_t *starts, const int64_t *order, int64_t n_order,
                             const int64_t *out, const int64_t *lut, int64_t lut_n, int64_t block_size, int64_t *X,
                             int64_t *Y) {
    int64_t bad = -1;
#pragma omp parallel for schedule(static) reduction(max : bad)
    for (int64_t k = 0; k < n_order; k++) {
        int64_t w = order[k], a = starts[w], n = starts[w + 1] - a;
        int64_t r = build_contexts(points + a, n, lut, lut_n, block_size, X + out[k] * block_size, Y + out[k]);
        if (r >= 0 && a + r > bad) bad = a + r;
    }
    return bad;
}
