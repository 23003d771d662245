/* Math shared by the C helpers (engine/fast/fused_norm.c, models/plain_eval.c); native.py hashes it with
   the sources that include it, so a change rebuilds them. */
#ifndef MAKEMORE_NATIVE_MATH_H
#define MAKEMORE_NATIVE_MATH_H

#include <stdint.h>
#include <string.h>

/* exp(x): 2^n p(r), r = x - n ln2 in [-ln2/2, ln2/2], Cephes' expf polynomial (relative error ~2e-7); written
   without library calls so that the compiler vectorizes the loops around it. x is clamped to [-87, 88]:
   the sigmoid below saturates there anyway. */
static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest: 1.5 * 2^23 */
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &e, 4);
    return p * scale;
}

#endif
