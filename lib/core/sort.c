#include "core/internal.h"

/* Heapsort: in place, O(n log n) in the worst case, and no allocation (the C
 * library's qsort may call malloc for a temporary array). */
static void sift_down(int32_t *a, size_t root, size_t n)
{
    int32_t x = a[root];
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n)
            break;
        if (child + 1 < n && a[child + 1] > a[child])
            child++;
        if (a[child] <= x)
            break;
        a[root] = a[child];
        root = child;
    }
    a[root] = x;
}

void mml__sort_i32(int32_t *a, size_t n)
{
    if (n < 2)
        return;
    for (size_t i = n / 2; i-- > 0;)
        sift_down(a, i, n);
    for (size_t end = n - 1; end > 0; end--) {
        int32_t top = a[0];
        a[0] = a[end];
        a[end] = top;
        sift_down(a, 0, end);
    }
}
