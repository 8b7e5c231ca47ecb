/* The claim channel's bytes, as src/protocol/claim.rs reads and writes them.
 * Native-endian: both ends run on the same machine. */
#ifndef HOTSWAP_CLAIM_H
#define HOTSWAP_CLAIM_H

#include <stdint.h>

#define HS_MAGIC 0x31575348u /* "HSW1" read as a little-endian u32 */
#define HS_OP_BIND 1u
#define HS_OP_IS_OWNED_SOCKET 2u /* the fd rides along as SCM_RIGHTS */
#define HS_OP_IS_OWNED_PATH 3u

struct hs_request {          /* 160 bytes */
    uint32_t magic;          /* 0 */
    uint32_t op;             /* 4 */
    int32_t domain;          /* 8: AF_INET, AF_INET6, AF_UNIX */
    int32_t type;            /* 12: SOCK_STREAM or SOCK_DGRAM, flags masked off */
    int32_t protocol;        /* 16 */
    int32_t v6only;          /* 20: 0, 1, or -1 when not IPv6 */
    uint64_t dev;            /* 24: op 3 */
    uint64_t ino;            /* 32: op 3 */
    uint32_t addrlen;        /* 40 */
    unsigned char addr[116]; /* 44: the sockaddr given to bind() */
};

struct hs_reply {            /* 16 bytes */
    uint32_t magic;
    int32_t error;           /* errno, 0 for none */
    uint32_t answer;         /* 1: claimed / owned; 0: pass through / not owned */
    uint32_t reserved;
};

_Static_assert(sizeof(struct hs_request) == 160, "request layout");
_Static_assert(sizeof(struct hs_reply) == 16, "reply layout");

#endif
