/* hotswap's preload library (DESIGN.md §7).
 *
 * Loaded into every child through LD_PRELOAD, so that an app which binds
 * its own port gets the socket hotswap owns for that address: every
 * generation then shares one socket, the port never closes, and no
 * generation meets EADDRINUSE. It asks hotswap on the abstract unix socket
 * named by HOTSWAP_CLAIM (the protocol: src/protocol/claim.rs, claim.h).
 *
 * Inventory: the libc functions this library replaces, and nothing else.
 *
 *   bind       A TCP or UDP bind to a non-zero port, or a bind to a unix
 *              path or abstract name: hotswap answers with its own socket
 *              (put in place of the app's fd with dup3, keeping the fd's
 *              close-on-exec flag; the app's O_NONBLOCK is applied to it),
 *              with the errno the kernel gave hotswap, or with "not mine",
 *              and then the real bind runs.
 *   shutdown   SHUT_RD or SHUT_RDWR of a listening socket hotswap owns is
 *              a no-op: it would stop the socket for every generation.
 *   unlink, unlinkat
 *              of the file of a unix socket hotswap owns is a no-op.
 *
 * Everything else, and all of the above when HOTSWAP_CLAIM is unset or
 * hotswap does not answer, goes straight to libc. The real functions are
 * looked up once, at load; a call allocates nothing and takes no lock, and
 * errno is what the app would have seen.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "claim.h"

#define EXPORT __attribute__((visibility("default")))

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);
typedef int (*shutdown_fn)(int, int);
typedef int (*unlink_fn)(const char *);
typedef int (*unlinkat_fn)(int, const char *, int);

static bind_fn real_bind;
static shutdown_fn real_shutdown;
static unlink_fn real_unlink;
static unlinkat_fn real_unlinkat;

/* hotswap's claim socket, copied at load: the app may change its environment. */
static struct sockaddr_un claim_addr;
static socklen_t claim_addr_len; /* 0: no hotswap to ask */

static void resolve(void) {
    real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
    real_shutdown = (shutdown_fn)dlsym(RTLD_NEXT, "shutdown");
    real_unlink = (unlink_fn)dlsym(RTLD_NEXT, "unlink");
    real_unlinkat = (unlinkat_fn)dlsym(RTLD_NEXT, "unlinkat");
}

/* Another library's constructor may call in before ours has run. */
#define REAL(f) (real_##f != NULL ? real_##f : (resolve(), real_##f))

__attribute__((constructor)) static void hotswap_preload_init(void) {
    resolve();
    const char *name = getenv("HOTSWAP_CLAIM");
    if (name == NULL || name[0] != '@') return;
    size_t len = strlen(name + 1);
    if (len == 0 || len >= sizeof claim_addr.sun_path) return;
    claim_addr.sun_family = AF_UNIX;
    claim_addr.sun_path[0] = '\0'; /* abstract namespace */
    memcpy(claim_addr.sun_path + 1, name + 1, len);
    claim_addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len);
}

/* One request, one reply: 0 and *reply filled in (and *fd_out, if hotswap
 * sent a socket), or -1 when hotswap could not be asked. */
static int ask(const struct hs_request *req, int fd_in, struct hs_reply *reply, int *fd_out) {
    *fd_out = -1;
    if (claim_addr_len == 0) return -1;
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    /* hotswap answers at once; never hang an app's bind on it. */
    struct timeval timeout = {.tv_sec = 10, .tv_usec = 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    if (connect(s, (const struct sockaddr *)&claim_addr, claim_addr_len) < 0) goto fail;

    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control;
    memset(&control, 0, sizeof control);
    struct iovec out_iov = {.iov_base = (void *)req, .iov_len = sizeof *req};
    struct msghdr out = {.msg_iov = &out_iov, .msg_iovlen = 1};
    if (fd_in >= 0) {
        out.msg_control = control.buf;
        out.msg_controllen = sizeof control.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&out);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd_in, sizeof(int));
    }
    /* 160 bytes on a fresh unix stream: sent whole or not at all. */
    if (sendmsg(s, &out, MSG_NOSIGNAL) != (ssize_t)sizeof *req) goto fail;

    size_t have = 0;
    while (have < sizeof *reply) {
        memset(&control, 0, sizeof control);
        struct iovec in_iov = {.iov_base = (char *)reply + have, .iov_len = sizeof *reply - have};
        struct msghdr in = {.msg_iov = &in_iov, .msg_iovlen = 1,
                            .msg_control = control.buf, .msg_controllen = sizeof control.buf};
        ssize_t n = recvmsg(s, &in, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) goto fail;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&in); c != NULL; c = CMSG_NXTHDR(&in, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && *fd_out < 0) {
                memcpy(fd_out, CMSG_DATA(c), sizeof(int));
            }
        }
        have += (size_t)n;
    }
    if (reply->magic != HS_MAGIC) goto fail;
    close(s);
    return 0;
fail:
    if (*fd_out >= 0) close(*fd_out);
    *fd_out = -1;
    close(s);
    return -1;
}

static void request_init(struct hs_request *req, uint32_t op) {
    memset(req, 0, sizeof *req);
    req->magic = HS_MAGIC;
    req->op = op;
    req->v6only = -1;
}

static int sockopt_int(int fd, int level, int name, int fallback) {
    int value = 0;
    socklen_t len = sizeof value;
    return getsockopt(fd, level, name, &value, &len) == 0 ? value : fallback;
}

/* Whether a bind of `addr` on `fd` is one hotswap may own. */
static int claimable(int fd, const struct sockaddr *addr, socklen_t len, int *type) {
    if (addr == NULL || len < (socklen_t)sizeof(sa_family_t)) return 0;
    *type = sockopt_int(fd, SOL_SOCKET, SO_TYPE, -1);
    switch (addr->sa_family) {
    case AF_INET:
        if (len < (socklen_t)sizeof(struct sockaddr_in)) return 0;
        if (((const struct sockaddr_in *)addr)->sin_port == 0) return 0; /* ephemeral */
        return *type == SOCK_STREAM || *type == SOCK_DGRAM;
    case AF_INET6:
        if (len < (socklen_t)sizeof(struct sockaddr_in6)) return 0;
        if (((const struct sockaddr_in6 *)addr)->sin6_port == 0) return 0;
        return *type == SOCK_STREAM || *type == SOCK_DGRAM;
    case AF_UNIX:
        /* An unnamed (autobind) address is nothing to claim. */
        return len > (socklen_t)offsetof(struct sockaddr_un, sun_path) &&
               (*type == SOCK_STREAM || *type == SOCK_DGRAM);
    default:
        return 0;
    }
}

EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    int saved = errno;
    int type = -1;
    if (claim_addr_len == 0 || !claimable(fd, addr, len, &type)) {
        errno = saved;
        return REAL(bind)(fd, addr, len);
    }
    struct hs_request req;
    request_init(&req, HS_OP_BIND);
    req.domain = addr->sa_family;
    req.type = type;
    req.protocol = sockopt_int(fd, SOL_SOCKET, SO_PROTOCOL, 0);
    if (addr->sa_family == AF_INET6) req.v6only = sockopt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0);
    req.addrlen = len < sizeof req.addr ? (uint32_t)len : (uint32_t)sizeof req.addr;
    memcpy(req.addr, addr, req.addrlen);

    struct hs_reply reply;
    int theirs = -1;
    if (ask(&req, -1, &reply, &theirs) < 0) { /* no hotswap to ask: as without it */
        errno = saved;
        return REAL(bind)(fd, addr, len);
    }
    if (reply.error != 0) {
        if (theirs >= 0) close(theirs);
        errno = reply.error;
        return -1;
    }
    if (reply.answer != 1 || theirs < 0) {
        errno = saved;
        return REAL(bind)(fd, addr, len);
    }
    int fd_flags = fcntl(fd, F_GETFD);
    int fl_flags = fcntl(fd, F_GETFL);
    /* dup2 would clear close-on-exec; dup3 keeps the app's choice. */
    int cloexec = (fd_flags >= 0 && (fd_flags & FD_CLOEXEC)) ? O_CLOEXEC : 0;
    if (dup3(theirs, fd, cloexec) < 0) {
        int e = errno;
        close(theirs);
        errno = e;
        return -1;
    }
    close(theirs);
    /* The app's SOCK_NONBLOCK choice, on the socket it now holds. */
    if (fl_flags >= 0 && (fl_flags & O_NONBLOCK)) {
        int now = fcntl(fd, F_GETFL);
        if (now >= 0) fcntl(fd, F_SETFL, now | O_NONBLOCK);
    }
    errno = saved;
    return 0;
}

EXPORT int shutdown(int fd, int how) {
    int saved = errno;
    if (claim_addr_len != 0 && (how == SHUT_RD || how == SHUT_RDWR) &&
        sockopt_int(fd, SOL_SOCKET, SO_ACCEPTCONN, 0) == 1) {
        struct hs_request req;
        request_init(&req, HS_OP_IS_OWNED_SOCKET);
        struct hs_reply reply;
        int unused = -1;
        if (ask(&req, fd, &reply, &unused) == 0) {
            if (unused >= 0) close(unused);
            if (reply.error == 0 && reply.answer == 1) {
                errno = saved;
                return 0; /* hotswap's socket stays listening for every generation */
            }
        }
    }
    errno = saved;
    return REAL(shutdown)(fd, how);
}

/* Whether the socket file `st` describes is one hotswap owns. */
static int owned_path(const struct stat *st) {
    struct hs_request req;
    request_init(&req, HS_OP_IS_OWNED_PATH);
    req.dev = (uint64_t)st->st_dev;
    req.ino = (uint64_t)st->st_ino;
    struct hs_reply reply;
    int unused = -1;
    if (ask(&req, -1, &reply, &unused) < 0) return 0;
    if (unused >= 0) close(unused);
    return reply.error == 0 && reply.answer == 1;
}

EXPORT int unlink(const char *path) {
    int saved = errno;
    struct stat st;
    if (claim_addr_len != 0 && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) &&
        owned_path(&st)) {
        errno = saved;
        return 0;
    }
    errno = saved;
    return REAL(unlink)(path);
}

EXPORT int unlinkat(int dirfd, const char *path, int flags) {
    int saved = errno;
    struct stat st;
    if (claim_addr_len != 0 && !(flags & AT_REMOVEDIR) &&
        fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode) &&
        owned_path(&st)) {
        errno = saved;
        return 0;
    }
    errno = saved;
    return REAL(unlinkat)(dirfd, path, flags);
}
