/*
 * replay_main.c — runs a libFuzzer target without libFuzzer: every file of the corpus
 * directory given as argv[1], then a fixed number of deterministic mutations of each (bit
 * flips, truncations, byte splices), so every CTest run re-checks the corpus and probes a
 * little around it. Real fuzzing: configure with -DCMK_FUZZ=ON (clang) and run the
 * fuzz_* binaries.
 */
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MUTATIONS 3000

static uint64_t rng = 0x853c49e6748fea9bull;

/* The corpus file being replayed, named when a property check aborts. */
static char current[4096];

static void on_abort(int sig)
{
    static const char pre[] = "replay: a check failed on ";
    static const char post[] = " (or a mutation of it)\n";

    (void)!write(2, pre, sizeof(pre) - 1);
    (void)!write(2, current, strlen(current));
    (void)!write(2, post, sizeof(post) - 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void mutate_and_run(const uint8_t *seed, size_t n)
{
    uint8_t *buf = malloc(n + 64);
    if (!buf)
        return;
    for (int m = 0; m < MUTATIONS; m++) {
        size_t len = n;
        memcpy(buf, seed, n);
        switch (next() % 4) {
        case 0: /* flip bits */
            for (int k = 0; k < 1 + (int)(next() % 4) && len; k++)
                buf[next() % len] ^= (uint8_t)(1u << (next() % 8));
            break;
        case 1: /* truncate */
            len = n ? next() % n : 0;
            break;
        case 2: /* set a byte to an edge value */
            if (len)
                buf[next() % len] = (uint8_t[]){0, 0xff, 0x7f, 0x80, '"', '{', '}'}[next() % 7];
            break;
        default: /* extend */
            for (int k = 0; k < 1 + (int)(next() % 32); k++)
                buf[len++] = (uint8_t)next();
            break;
        }
        LLVMFuzzerTestOneInput(buf, len);
    }
    free(buf);
}

int main(int argc, char **argv)
{
    DIR *d;
    struct dirent *de;
    int files = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    signal(SIGABRT, on_abort);
    d = opendir(argv[1]);
    if (!d) {
        perror(argv[1]);
        return 2;
    }
    while ((de = readdir(d)) != NULL) {
        char path[4096];
        FILE *f;
        uint8_t *buf;
        long n;

        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", argv[1], de->d_name);
        f = fopen(path, "rb");
        if (!f)
            continue;
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        fseek(f, 0, SEEK_SET);
        buf = malloc(n > 0 ? (size_t)n : 1);
        if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
            snprintf(current, sizeof(current), "%s", path);
            LLVMFuzzerTestOneInput(buf, (size_t)n);
            mutate_and_run(buf, (size_t)n);
            files++;
        }
        free(buf);
        fclose(f);
    }
    closedir(d);
    printf("%d passed, 0 failed\n", files);
    return files > 0 ? 0 : 1;
}
