/* fuzz_header.c — the container parsers: header, then chunk records and index entries over
 * the rest of the input. They must never read out of bounds or accept inconsistent sizes. */
#include <stdlib.h>
#include <string.h>

#include "core/format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cmk_fmt_header h;
    cmk_fmt_chunk c;

    if (cmk_fmt_header_decode(data, size, &h, NULL) != CMK_OK)
        return 0;
    /* Anything accepted must describe a file whose parts add up without overflow. */
    if (cmk_fmt_file_size(&h) < CMK_FMT_HEADER_SIZE)
        abort();
    const uint8_t *rest = data + CMK_FMT_HEADER_SIZE;
    size_t rlen = size - CMK_FMT_HEADER_SIZE;
    if (rlen >= CMK_FMT_CHUNK_HDR_SIZE && h.chunk_count > 0)
        if (cmk_fmt_chunk_decode(rest, &h, 0, &c, NULL) != CMK_OK) {
            /* rejected: what it must do with such bytes (it must not crash or overread) */
        }
    if (h.chunk_count > 0 && h.chunk_count <= rlen / CMK_FMT_INDEX_ENTRY_SIZE) {
        cmk_fmt_index_entry *e = calloc((size_t)h.chunk_count, sizeof(*e));
        if (e) {
            if (cmk_fmt_index_decode(rest, (size_t)h.chunk_count * CMK_FMT_INDEX_ENTRY_SIZE, &h, e,
                                     NULL) == CMK_OK &&
                e[h.chunk_count - 1].offset >= h.index_offset)
                abort();
            free(e);
        }
    }
    return 0;
}
