/* Four threads make intgemm's first call at once (tests/test_intgemm.py, under ThreadSanitizer): Python threads
 * can, since ctypes drops the GIL.  Exit 3 if they were told different variants. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

const char *igemm_variant(void);

static const char *got[4];

static void *first_call(void *arg)
{
    got[(long)arg] = igemm_variant();
    return NULL;
}

int main(void)
{
    pthread_t t[4];
    for (long i = 0; i < 4; ++i)
        if (pthread_create(&t[i], NULL, first_call, (void *)i))
            return 2;
    for (int i = 0; i < 4; ++i)
        pthread_join(t[i], NULL);
    for (int i = 1; i < 4; ++i)
        if (strcmp(got[i], got[0]))
            return 3;
    puts(got[0]);
    return 0;
}
