/* Model resolution for the pipelines: an existing local path is used as is; anything else is a
 * Hugging Face repo id ("org/name", optionally "org/name@revision", default main) looked up in the
 * huggingface_hub cache and downloaded into it with libcurl when missing.
 *
 * The cache has huggingface_hub's layout, so Python and kiln share it:
 *   $HF_HUB_CACHE (else $HF_HOME/hub, else ~/.cache/huggingface/hub)
 *     models--org--name/refs/<revision>            the commit hash the revision pointed at
 *     models--org--name/blobs/<etag>               file contents, named by ETag (LFS: SHA-256)
 *     models--org--name/snapshots/<commit>/<path>  relative symlinks to ../../blobs/<etag>
 *     .locks/models--org--name/<etag>.lock         flock()ed while a blob is being written
 * A snapshot that already holds the model is used without network. HF_HUB_OFFLINE=1: cache only.
 *
 * Downloads: GET {HF_ENDPOINT}/api/models/{repo}/revision/{rev} lists the files and the commit;
 * only what a pipeline reads is fetched (configs, tokenizer files, pooling config, ONE model and
 * its external data). Each file: HEAD {endpoint}/{repo}/resolve/{commit}/{path} for the ETag and
 * size (X-Linked-Etag / X-Linked-Size for LFS files, which redirect to a CDN), then GET following
 * redirects into blobs/<etag>.incomplete, resumed with a Range request when a previous attempt left
 * one, verified (SHA-256 for LFS, the size otherwise) and renamed into place.
 *
 * The cache may be shared with others (a common HF_HOME), so nothing below its root is trusted:
 * every folder is opened component by component with O_NOFOLLOW and every file with O_NOFOLLOW
 * (a symlink planted at blobs/, snapshots/<commit>, .locks/... or blobs/<etag>.incomplete is
 * refused, never written through), new files are created with O_EXCL in their own folder and
 * renamed into place. The server is not trusted either: a body longer than the size HEAD announced
 * is cut off, error bodies are read up to 16 kB, a transfer slower than KILN_HUB_LOW_SPEED_LIMIT
 * bytes/s (default 1024) for HF_HUB_DOWNLOAD_TIMEOUT seconds (default 30) fails, and the whole
 * download has a deadline of KILN_HUB_DEADLINE seconds (default 21600); a file whose size the hub
 * does not announce is capped at KILN_HUB_MAX_FILE_SIZE bytes (default 256 GiB). */
#include "pipelines/pl_internal.h"
#include <curl/curl.h>
#include <openssl/evp.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define HUB_DEADLINE_SLACK_S 0.25     /* curl timer granularity against the deadline (see hub_request) */
#define HUB_ATTEMPTS 3                /* tries per request on network errors, 5xx and 429 */
#define HUB_API_MAX (64 << 20)        /* largest repo listing accepted */
#define HUB_ERROR_BODY_MAX (16 << 10) /* what is kept of an error body; the rest is not read */

/* ---------------------------------------------------------------- small helpers */

static char *hub_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *hub_fmt(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

static int hub_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}
static int hub_is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int hub_ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && memcmp(s + a - b, suf, b) == 0;
}

/* mkdir -p; 0 or -1 with errno */
static int hub_mkdirs(const char *path) {
    char *p = strdup(path);
    if (!p) return -1;
    for (char *q = p + 1;; q++) {
        if (*q == '/' || !*q) {
            char c = *q;
            *q = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                int e = errno;
                free(p);
                errno = e;
                return -1;
            }
            *q = c;
            if (!c) break;
        }
    }
    free(p);
    return 0;
}

static char *hub_dirname(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? strndup(path, (size_t)(s - path)) : strdup("");
}

static int hub_env_true(const char *name) {
    const char *v = getenv(name);
    if (!v) return 0;
    return !strcasecmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on");
}

/* A positive number from the environment, else def. */
static long hub_env_long(const char *name, long def) {
    const char *v = getenv(name);
    if (!v || !*v) return def;
    char *e;
    long x = strtol(v, &e, 10);
    return e != v && !*e && x > 0 ? x : def;
}

static double hub_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int hub_is_hex(const char *s, size_t n) {
    if (strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i])) return 0;
    return 1;
}
static int hub_is_commit(const char *rev) { return hub_is_hex(rev, 40); }

/* ---------------------------------------------------------------- environment */

/* $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface (huggingface_hub's rule) */
static char *hub_home(void) {
    const char *v = getenv("HF_HOME");
    if (v && *v) return strdup(v);
    v = getenv("XDG_CACHE_HOME");
    if (v && *v) return hub_fmt("%s/huggingface", v);
    const char *home = getenv("HOME");
    if (!home || !*home) {
        struct passwd *pw = getpwuid(getuid());
        home = pw ? pw->pw_dir : "/tmp";
    }
    return hub_fmt("%s/.cache/huggingface", home);
}

static char *hub_cache_root(void) {
    const char *v = getenv("HF_HUB_CACHE");
    if (!v || !*v) v = getenv("HUGGINGFACE_HUB_CACHE");
    if (v && *v) return strdup(v);
    char *home = hub_home();
    char *r = home ? hub_fmt("%s/hub", home) : NULL;
    free(home);
    return r;
}

/* $HF_TOKEN, else the file huggingface-cli login writes ($HF_TOKEN_PATH, else $HF_HOME/token) */
static char *hub_token(void) {
    const char *v = getenv("HF_TOKEN");
    if (!v || !*v) v = getenv("HUGGING_FACE_HUB_TOKEN");
    char *t = NULL;
    if (v && *v) t = strdup(v);
    else {
        char *path = NULL;
        const char *tp = getenv("HF_TOKEN_PATH");
        if (tp && *tp) path = strdup(tp);
        else {
            char *home = hub_home();
            path = home ? hub_fmt("%s/token", home) : NULL;
            free(home);
        }
        FILE *f = path ? fopen(path, "r") : NULL;
        free(path);
        if (f) {
            char buf[1024];
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[n] = 0;
            t = strdup(buf);
        }
    }
    if (!t) return NULL;
    char *s = t; /* trim */
    while (*s && isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    if (!n) {
        free(t);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20) {
            free(t);
            return NULL;
        } /* no header injection */
    memmove(t, s, n + 1);
    return t;
}

/* ---------------------------------------------------------------- repo ids */

static int hub_valid_name(const char *s, size_t n) {
    if (n == 0 || n > 96) return 0;
    if (s[0] == '-' || s[0] == '.' || s[n - 1] == '-' || s[n - 1] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '-' && c != '_' && c != '.') return 0;
        if (i && (c == '-' || c == '.') && s[i - 1] == c) return 0; /* no "--" or ".." */
    }
    return 1;
}

/* A revision is used as a path under refs/: no empty or dot segments, no control characters. */
static int hub_valid_rev(const char *r) {
    size_t n = strlen(r);
    if (n == 0 || n > 255 || r[0] == '/' || r[n - 1] == '/') return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)r[i] <= 0x20 || r[i] == '\\') return 0;
    for (const char *s = r; s;) {
        const char *e = strchr(s, '/');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        if (l == 0 || (l == 1 && s[0] == '.') || (l == 2 && s[0] == '.' && s[1] == '.')) return 0;
        s = e ? e + 1 : NULL;
    }
    return 1;
}

/* "org/name[@rev]" -> repo, rev (malloc'd); 0 when s is not a repo id */
static int hub_parse_repo(const char *s, char **repo, char **rev) {
    *repo = *rev = NULL;
    const char *at = strchr(s, '@');
    size_t rl = at ? (size_t)(at - s) : strlen(s);
    const char *slash = memchr(s, '/', rl);
    if (!slash) return 0;
    size_t ol = (size_t)(slash - s), nl = rl - ol - 1;
    if (!hub_valid_name(s, ol) || !hub_valid_name(slash + 1, nl)) return 0;
    const char *r = at ? at + 1 : "main";
    if (!hub_valid_rev(r)) return 0;
    *repo = strndup(s, rl);
    *rev = strdup(r);
    if (!*repo || !*rev) {
        free(*repo);
        free(*rev);
        *repo = *rev = NULL;
        return 0;
    }
    return 1;
}

/* A repo file path: relative, no empty / "." / ".." segments, printable. */
static int hub_valid_path(const char *p) { return p[0] && p[0] != '/' && hub_valid_rev(p); }

/* ---------------------------------------------------------------- HTTP */

typedef struct hub_ctx {
    char *endpoint; /* no trailing '/' */
    char *auth;     /* "Authorization: Bearer ..." or NULL */
    const char *repo;
    long stall_s;        /* low-speed time */
    long low_speed;      /* bytes/s below which a transfer counts as stalled */
    double deadline;     /* hub_now() after which every request fails */
    int64_t max_unknown; /* cap on a file whose size the hub does not announce */
    int progress;        /* stderr is a terminal */
} hub_ctx;

typedef struct hub_http {
    long status;
    char etag[192], linked_etag[192], commit[96], location[2048], err_code[96], err_msg[512];
    int64_t content_length, linked_size, range_start; /* -1 when absent */
    /* body: to file (status 200/206) or to memory (API answers, error bodies) */
    int fd;                 /* the file, or -1 */
    int64_t file_off, off0; /* bytes in the file; at the start */
    int64_t file_cap;       /* the most bytes the file may reach (-1: no cap) */
    int started, write_errno, range_mismatch, over_cap, body_capped, deadline_hit;
    double deadline; /* 0: none */
    char *body;
    size_t body_len, body_cap, body_max;
    /* progress */
    const char *label;
    int64_t total;
    double t0, t_last;
    int progress, shown;
} hub_http;

static void hub_http_init(hub_http *h) {
    memset(h, 0, sizeof *h);
    h->content_length = h->linked_size = h->range_start = h->file_cap = -1;
    h->fd = -1;
    h->body_max = HUB_ERROR_BODY_MAX;
}

static void hub_copy_hdr(char *dst, size_t cap, const char *v, size_t n) {
    if (n >= cap) n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = 0;
}

static size_t hub_header_cb(char *buf, size_t sz, size_t nm, void *ud) {
    hub_http *h = ud;
    size_t len = sz * nm;
    if (len >= 5 && !memcmp(buf, "HTTP/", 5)) { /* a new response (after a redirect): reset */
        long st = 0;
        const char *sp = memchr(buf, ' ', len);
        if (sp) st = strtol(sp + 1, NULL, 10);
        char keep_le[192], keep_commit[96];
        int64_t keep_ls = h->linked_size;
        memcpy(keep_le, h->linked_etag, sizeof keep_le);
        memcpy(keep_commit, h->commit, sizeof keep_commit);
        h->status = st;
        h->etag[0] = h->location[0] = h->err_code[0] = h->err_msg[0] = 0;
        h->content_length = h->range_start = -1;
        /* the hub's own answer carries X-Linked-*; the CDN's after the redirect does not */
        memcpy(h->linked_etag, keep_le, sizeof keep_le);
        memcpy(h->commit, keep_commit, sizeof keep_commit);
        h->linked_size = keep_ls;
        return len;
    }
    const char *colon = memchr(buf, ':', len);
    if (!colon) return len;
    size_t kl = (size_t)(colon - buf);
    const char *v = colon + 1, *end = buf + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
    size_t vl = (size_t)(end - v);
#define HDR(name) (kl == sizeof(name) - 1 && !strncasecmp(buf, name, kl))
    if (HDR("ETag")) hub_copy_hdr(h->etag, sizeof h->etag, v, vl);
    else if (HDR("X-Linked-Etag")) hub_copy_hdr(h->linked_etag, sizeof h->linked_etag, v, vl);
    else if (HDR("X-Repo-Commit")) hub_copy_hdr(h->commit, sizeof h->commit, v, vl);
    else if (HDR("Location")) hub_copy_hdr(h->location, sizeof h->location, v, vl);
    else if (HDR("X-Error-Code")) hub_copy_hdr(h->err_code, sizeof h->err_code, v, vl);
    else if (HDR("X-Error-Message")) hub_copy_hdr(h->err_msg, sizeof h->err_msg, v, vl);
    else if (HDR("Content-Length") || HDR("X-Linked-Size")) {
        char tmp[32];
        hub_copy_hdr(tmp, sizeof tmp, v, vl);
        char *e;
        long long x = strtoll(tmp, &e, 10);
        if (e != tmp && x >= 0) {
            if (HDR("Content-Length")) h->content_length = x;
            else h->linked_size = x;
        }
    } else if (HDR("Content-Range")) {
        char tmp[96];
        hub_copy_hdr(tmp, sizeof tmp, v, vl);
        long long a;
        if (sscanf(tmp, "bytes %lld-", &a) == 1) h->range_start = a;
    }
#undef HDR
    return len;
}

static size_t hub_write_cb(char *p, size_t sz, size_t nm, void *ud) {
    hub_http *h = ud;
    size_t len = sz * nm;
    if (h->fd >= 0 && (h->status == 200 || h->status == 206)) {
        if (!h->started) {
            h->started = 1;
            if (h->status == 200 && h->file_off > 0) { /* the server ignored the Range: start over */
                if (ftruncate(h->fd, 0) != 0) {
                    h->write_errno = errno;
                    return 0;
                }
                h->file_off = h->off0 = 0;
            } else if (h->status == 206 && h->range_start != h->file_off) {
                h->range_mismatch = 1;
                return 0;
            }
        }
        /* a body longer than announced is an error, found before it fills the disk */
        if (h->file_cap >= 0 && h->file_off + (int64_t)len > h->file_cap) {
            h->over_cap = 1;
            return 0;
        }
        for (size_t done = 0; done < len;) {
            ssize_t w = pwrite(h->fd, p + done, len - done, (off_t)(h->file_off + (int64_t)done));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                h->write_errno = w < 0 ? errno : EIO;
                return 0;
            }
            done += (size_t)w;
        }
        h->file_off += (int64_t)len;
        return len;
    }
    /* memory: the API's JSON, or an error body kept for the message */
    size_t room = h->body_max > h->body_len ? h->body_max - h->body_len : 0;
    size_t take = len < room ? len : room;
    if (take && h->body_len + take + 1 > h->body_cap) {
        size_t cap = h->body_cap ? h->body_cap : 4096;
        while (cap < h->body_len + take + 1) cap *= 2;
        char *b = realloc(h->body, cap);
        if (!b) return 0;
        h->body = b;
        h->body_cap = cap;
    }
    if (take) {
        memcpy(h->body + h->body_len, p, take);
        h->body_len += take;
        h->body[h->body_len] = 0;
    }
    /* over the limit: stop reading (an endless error body must not keep the transfer alive) */
    if (take < len) {
        h->body_capped = 1;
        return 0;
    }
    return len;
}

static void hub_show(hub_http *h, int done) {
    double t = hub_now(), dt = t - h->t0;
    /* the rate counts this transfer's bytes only, not what a resume started from */
    double mb = h->file_off / 1e6, rate = dt > 0 ? (h->file_off - h->off0) / 1e6 / dt : 0;
    char tot[48] = "";
    if (h->total > 0)
        snprintf(tot, sizeof tot, " / %.1f MB (%d%%)", h->total / 1e6, (int)(100.0 * h->file_off / h->total));
    fprintf(stderr, "\r  %s: %.1f MB%s  %.1f MB/s   %s", h->label, mb, tot, rate, done ? "\n" : "");
    fflush(stderr);
    h->shown = 1;
}

static int hub_xfer_cb(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    hub_http *h = ud;
    double t = hub_now();
    if (h->deadline > 0 && t > h->deadline) {
        h->deadline_hit = 1;
        return 1;
    }
    if (h->progress && h->fd >= 0 && (h->status == 200 || h->status == 206) && t - h->t_last >= 0.25) {
        h->t_last = t;
        hub_show(h, 0);
    }
    return 0;
}

static pthread_once_t hub_curl_once = PTHREAD_ONCE_INIT;
static void hub_curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* One request. head: HEAD instead of GET; range_from > 0: "Range: bytes=N-". The HTTP status
 * lands in h->status; the return is libcurl's code, with its message in cerr. */
static CURLcode hub_request(const hub_ctx *c, int head, const char *url, int follow, int64_t range_from, hub_http *h,
                            char cerr[CURL_ERROR_SIZE]) {
    pthread_once(&hub_curl_once, hub_curl_init);
    cerr[0] = 0;
    CURL *e = curl_easy_init();
    if (!e) {
        snprintf(cerr, CURL_ERROR_SIZE, "could not start libcurl");
        return CURLE_FAILED_INIT;
    }
    struct curl_slist *hd = curl_slist_append(NULL, "Accept-Encoding: identity");
    if (c->auth) hd = curl_slist_append(hd, c->auth);
    char range[64];
    if (range_from > 0) {
        snprintf(range, sizeof range, "Range: bytes=%lld-", (long long)range_from);
        hd = curl_slist_append(hd, range);
    }
    char ua[128];
    snprintf(ua, sizeof ua, "kiln/%s; hf_hub-compatible", kn_version());
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(e, CURLOPT_USERAGENT, ua);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, cerr);
    if (head) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#endif
    /* a custom Authorization header is not sent on to another host after a redirect (the CDN) */
    curl_easy_setopt(e, CURLOPT_UNRESTRICTED_AUTH, 0L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 30L);
    /* a stalled or dripping server fails, never hangs */
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, c->low_speed);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, c->stall_s);
    h->deadline = c->deadline;
    if (c->deadline > 0) {
        double left = c->deadline - hub_now();
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, left > 0.001 ? (long)(left * 1000) : 1L);
    }
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, hub_header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, hub_write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, hub_xfer_cb);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, h);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    const char *ca = getenv("REQUESTS_CA_BUNDLE");
    if (!ca || !*ca) ca = getenv("CURL_CA_BUNDLE");
    if (ca && *ca) curl_easy_setopt(e, CURLOPT_CAINFO, ca);
    h->t0 = h->t_last = hub_now();
    CURLcode rc = curl_easy_perform(e);
    long code = 0;
    if (curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code) h->status = code;
    curl_easy_cleanup(e);
    curl_slist_free_all(hd);
    /* curl's overall timer, set from the deadline in whole milliseconds, can fire a little before
     * hub_now() reaches it (seen at 2988 ms of 3 s on a loaded machine): a timeout that close to the
     * deadline is the deadline */
    if (c->deadline > 0 &&
        (h->deadline_hit || (rc == CURLE_OPERATION_TIMEDOUT && hub_now() >= c->deadline - HUB_DEADLINE_SLACK_S))) {
        h->deadline_hit = 1;
        snprintf(cerr, CURL_ERROR_SIZE, "the download's deadline passed (KILN_HUB_DEADLINE)");
        return CURLE_OPERATION_TIMEDOUT;
    }
    /* an error answer whose body was cut at HUB_ERROR_BODY_MAX is a complete answer for us */
    if (rc == CURLE_WRITE_ERROR && h->body_capped && h->status >= 400) rc = CURLE_OK;
    if (rc != CURLE_OK && !cerr[0]) snprintf(cerr, CURL_ERROR_SIZE, "%s", curl_easy_strerror(rc));
    return rc;
}

static int hub_transient(CURLcode rc, long status) {
    if (rc == CURLE_OK) return status >= 500 || status == 429;
    return rc != CURLE_WRITE_ERROR && rc != CURLE_COULDNT_RESOLVE_HOST && rc != CURLE_COULDNT_RESOLVE_PROXY &&
        rc != CURLE_URL_MALFORMAT && rc != CURLE_UNSUPPORTED_PROTOCOL && rc != CURLE_OUT_OF_MEMORY &&
        rc != CURLE_TOO_MANY_REDIRECTS && rc != CURLE_FAILED_INIT && rc != CURLE_SSL_CACERT_BADFILE &&
        rc != CURLE_PEER_FAILED_VERIFICATION;
}

/* Whether another try is worth it: a transient failure, attempts left, and time before the deadline. */
static int hub_retry(const hub_ctx *c, const hub_http *h, int attempt, CURLcode rc) {
    if (attempt >= HUB_ATTEMPTS || h->deadline_hit || h->over_cap || !hub_transient(rc, h->status)) return 0;
    double pause = attempt < 3 ? attempt : 3;
    if (c->deadline > 0 && hub_now() + pause >= c->deadline) return 0;
    return 1;
}

static void hub_backoff(int attempt) { sleep(attempt < 3 ? (unsigned)attempt : 3u); }

/* The error for a failed request: the method, URL and status, the hub's own explanation, a hint. */
static kn_status *hub_http_error(const hub_ctx *c, const char *method, const char *url, CURLcode rc, const char *cerr,
                                 const hub_http *h, const char *what) {
    if (rc != CURLE_OK && !(h->status >= 400))
        return kn_error(KN_ERR_IO, "%s %s: network error: %s%s", method, url, cerr, what ? what : "");
    char why[600] = "";
    if (h->err_msg[0]) snprintf(why, sizeof why, ": %s", h->err_msg);
    else if (h->body_len && h->body) {
        json_object *j = json_tokener_parse(h->body), *v;
        if (j && json_object_is_type(j, json_type_object) && json_object_object_get_ex(j, "error", &v) &&
            json_object_is_type(v, json_type_string))
            snprintf(why, sizeof why, ": %.500s", json_object_get_string(v));
        if (j) json_object_put(j);
    }
    const char *hint = "";
    switch (h->status) {
    case 401:
        hint = c->auth ? " (the token in HF_TOKEN was rejected, or the repo does not exist)"
                       : " (a private or gated repo needs a token: set HF_TOKEN; or the repo does not exist)";
        break;
    case 403:
        hint = " (access denied: a gated repo needs its access request accepted on the model page, and a token with "
               "read access)";
        break;
    case 404: hint = " (no such repo, revision or file)"; break;
    case 429: hint = " (rate limited: try again later, or set HF_TOKEN)"; break;
    default: break;
    }
    const char *name = h->status == 401 ? "Unauthorized"
        : h->status == 403              ? "Forbidden"
        : h->status == 404              ? "Not Found"
        : h->status == 416              ? "Range Not Satisfiable"
        : h->status == 429              ? "Too Many Requests"
        : h->status >= 500              ? "Server Error"
                                        : "";
    return kn_error(KN_ERR_IO, "%s %s: HTTP %ld%s%s%s%s%s", method, url, h->status, name[0] ? " " : "", name, why, hint,
                    what ? what : "");
}

/* percent-encodes s; keep_slash leaves '/' as is (file paths) */
static char *hub_escape(const char *s, int keep_slash) {
    size_t n = strlen(s);
    char *o = malloc(n * 3 + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~' || (keep_slash && ch == '/'))
            o[k++] = (char)ch;
        else k += (size_t)sprintf(o + k, "%%%02X", ch);
    }
    o[k] = 0;
    return o;
}

/* ---------------------------------------------------------------- file hashing */

/* SHA-256 of what fd holds, read from offset 0 (the file kiln wrote, never reopened by name). */
static kn_status *hub_sha256_fd(int fd, const char *path, char hex[65]) {
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char *buf = malloc(1 << 20);
    kn_status *st = NULL;
    if (!md || !buf || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
        st = kn_error(KN_ERR_RUNTIME, "SHA-256: OpenSSL failed to start");
    off_t off = 0;
    while (!st) {
        ssize_t n = pread(fd, buf, 1 << 20, off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            st = kn_error(KN_ERR_IO, "%s: read error: %s", path, strerror(errno));
            break;
        }
        if (n == 0) break;
        if (EVP_DigestUpdate(md, buf, (size_t)n) != 1) st = kn_error(KN_ERR_RUNTIME, "SHA-256: OpenSSL failed");
        off += n;
    }
    unsigned char d[32];
    unsigned int dl = 0;
    if (!st && EVP_DigestFinal_ex(md, d, &dl) != 1) st = kn_error(KN_ERR_RUNTIME, "SHA-256: OpenSSL failed");
    for (unsigned i = 0; !st && i < 32; i++) sprintf(hex + 2 * i, "%02x", d[i]);
    EVP_MD_CTX_free(md);
    free(buf);
    return st;
}

/* ---------------------------------------------------------------- cache */

typedef struct hub_repo {
    char *repo, *rev;
    char *cache;    /* cache root: the one path whose symlinks are followed (the user chose it) */
    char *folder;   /* models--org--name, relative to the root */
    char *repo_dir; /* cache/models--org--name */
    char *lock_dir; /* cache/.locks/models--org--name */
} hub_repo;

static void hub_repo_free(hub_repo *r) {
    free(r->repo);
    free(r->rev);
    free(r->cache);
    free(r->folder);
    free(r->repo_dir);
    free(r->lock_dir);
}

static kn_status *hub_repo_init(hub_repo *r, const char *repo_at_rev) {
    memset(r, 0, sizeof *r);
    if (!hub_parse_repo(repo_at_rev, &r->repo, &r->rev))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "'%s' is not a Hugging Face repo id (org/name, optionally @revision)",
                        repo_at_rev);
    r->cache = hub_cache_root();
    if (!r->cache) return KN_OOM(0);
    const char *slash = strchr(r->repo, '/');
    r->folder = hub_fmt("models--%.*s--%s", (int)(slash - r->repo), r->repo, slash + 1);
    if (!r->folder) return KN_OOM(0);
    r->repo_dir = hub_fmt("%s/%s", r->cache, r->folder);
    r->lock_dir = hub_fmt("%s/.locks/%s", r->cache, r->folder);
    return r->repo_dir && r->lock_dir ? NULL : KN_OOM(0);
}

static kn_status *hub_symlink_error(const char *root, const char *rel) {
    return kn_error(KN_ERR_IO,
                    "%s/%s is a symbolic link inside the Hugging Face cache: kiln does not follow links "
                    "there (another user of a shared cache could point them at any file); remove it and run again",
                    root, rel);
}

/* Opens the folder rel (a relative path) under root without following a symlink at any level
 * below root; create: make missing folders. *fd is -1 (and the status NULL) when create is 0 and
 * the folder does not exist. */
static kn_status *hub_open_dir(const char *root, const char *rel, int create, int *fd) {
    *fd = -1;
    if (create && hub_mkdirs(root) != 0)
        return kn_error(KN_ERR_IO, "%s: cannot create folder: %s", root, strerror(errno));
    int cur = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cur < 0) {
        if (errno == ENOENT && !create) return NULL;
        return kn_error(KN_ERR_IO, "%s: %s", root, strerror(errno));
    }
    char *path = strdup(rel);
    if (!path) {
        close(cur);
        return KN_OOM(0);
    }
    kn_status *st = NULL;
    for (char *comp = path; comp && !st;) {
        char *next = strchr(comp, '/');
        if (next) *next++ = 0;
        if (!*comp) {
            comp = next;
            continue;
        }
        if (create && mkdirat(cur, comp, 0755) != 0 && errno != EEXIST) {
            st = kn_error(KN_ERR_IO, "%s/%s: cannot create folder: %s", root, rel, strerror(errno));
            break;
        }
        int nfd = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (nfd < 0) {
            int e = errno;
            struct stat sb;
            if (fstatat(cur, comp, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode)) {
                if (next) next[-1] = 0; /* name the link itself, not the whole path */
                st = hub_symlink_error(root, path);
            } else if (e == ENOENT && !create) {
                close(cur);
                cur = -1;
                break;
            } else {
                st = kn_error(KN_ERR_IO, "%s/%s: %s", root, rel, strerror(e));
            }
            break;
        }
        close(cur);
        cur = nfd;
        comp = next;
    }
    free(path);
    if (st) {
        if (cur >= 0) close(cur);
        return st;
    }
    *fd = cur;
    return NULL;
}

/* What is at dfd/name, links not followed: 0 nothing, 1 a regular file, -1 anything else. */
static int hub_entry(int dfd, const char *name, struct stat *sb) {
    if (fstatat(dfd, name, sb, AT_SYMLINK_NOFOLLOW) != 0) return 0;
    return S_ISREG(sb->st_mode) ? 1 : -1;
}

/* refs/<rev> -> commit (malloc'd) or NULL; a ref reached through a link is ignored */
static char *hub_read_ref(const hub_repo *r) {
    char *rel = hub_fmt("%s/refs/%s", r->folder, r->rev);
    char *dir = rel ? hub_dirname(rel) : NULL;
    const char *base = rel ? strrchr(rel, '/') + 1 : NULL;
    int dfd = -1;
    kn_status *st = dir ? hub_open_dir(r->cache, dir, 0, &dfd) : NULL;
    kn_status_free(st);
    int fd = dfd >= 0 ? openat(dfd, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) : -1;
    char buf[128] = "";
    struct stat sb;
    if (fd >= 0 && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode)) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        buf[n > 0 ? n : 0] = 0;
    }
    if (fd >= 0) close(fd);
    if (dfd >= 0) close(dfd);
    free(rel);
    free(dir);
    size_t n = strlen(buf);
    while (n && isspace((unsigned char)buf[n - 1])) buf[--n] = 0;
    return hub_is_commit(buf) ? strdup(buf) : NULL;
}

/* Whether a snapshot folder holds the model: onnx_file when given (an absolute one lives outside
 * the cache, so any snapshot will do), else model.onnx or onnx/model.onnx, else a .onnx file at
 * the root or under onnx/. Broken symlinks do not count. */
static int hub_snapshot_ready(const char *snap, const char *onnx_file) {
    struct stat st;
    if (stat(snap, &st) != 0 || !S_ISDIR(st.st_mode)) return 0;
    char p[4096];
    if (onnx_file) {
        if (onnx_file[0] == '/') return 1;
        snprintf(p, sizeof p, "%s/%s", snap, onnx_file);
        return hub_is_file(p);
    }
    static const char *const sub[] = {"", "/onnx"};
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s%s/model.onnx", snap, sub[k]);
        if (hub_is_file(p)) return 1;
    }
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s%s", snap, sub[k]);
        DIR *d = opendir(p);
        if (!d) continue;
        struct dirent *e;
        int found = 0;
        while (!found && (e = readdir(d))) {
            if (!hub_ends_with(e->d_name, ".onnx")) continue;
            char q[4096 + 256];
            snprintf(q, sizeof q, "%s/%s", p, e->d_name);
            found = hub_is_file(q);
        }
        closedir(d);
        if (found) return 1;
    }
    return 0;
}

/* A temp name beside name, unique across processes and threads. */
static char *hub_tmp_name(const char *name) {
    static unsigned long counter;
    unsigned long k = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
    return hub_fmt("%s.tmp.%ld.%lu", name, (long)getpid(), k);
}

/* Writes rel (under the cache root) atomically: an O_EXCL temp file in its folder, then rename. */
static kn_status *hub_write_file(const hub_repo *r, const char *rel, const char *data) {
    char *dir = hub_dirname(rel);
    if (!dir) return KN_OOM(0);
    const char *base = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
    int dfd = -1;
    kn_status *st = hub_open_dir(r->cache, dir, 1, &dfd);
    char *tmp = st ? NULL : hub_tmp_name(base);
    if (!st && !tmp) st = KN_OOM(0);
    if (!st) {
        int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0) st = kn_error(KN_ERR_IO, "%s/%s/%s: %s", r->cache, dir, tmp, strerror(errno));
        else {
            size_t n = strlen(data);
            int bad = write(fd, data, n) != (ssize_t)n;
            bad |= close(fd) != 0;
            if (bad) st = kn_error(KN_ERR_IO, "%s/%s/%s: write failed: %s", r->cache, dir, tmp, strerror(errno));
            else if (renameat(dfd, tmp, dfd, base) != 0)
                st = kn_error(KN_ERR_IO, "%s/%s: %s", r->cache, rel, strerror(errno));
            if (st) unlinkat(dfd, tmp, 0);
        }
    }
    if (dfd >= 0) close(dfd);
    free(tmp);
    free(dir);
    return st;
}

/* snapshots/<commit>/<path> -> ../../blobs/<etag> (one more ../ per folder level in path) */
static kn_status *hub_link(const hub_repo *r, const char *commit, const char *path, const char *etag) {
    char *rel = hub_fmt("%s/snapshots/%s/%s", r->folder, commit, path);
    char *dir = rel ? hub_dirname(rel) : NULL;
    char *blobs_rel = hub_fmt("%s/blobs", r->folder);
    if (!dir || !blobs_rel) {
        free(rel);
        free(dir);
        free(blobs_rel);
        return KN_OOM(0);
    }
    const char *base = strrchr(rel, '/') + 1;
    int dfd = -1;
    kn_status *st = hub_open_dir(r->cache, dir, 1, &dfd);
    size_t depth = 0;
    for (const char *s = path; *s; s++) depth += *s == '/';
    size_t tl = 6 + 3 * depth + 6 + strlen(etag) + 1;
    char *target = st ? NULL : malloc(tl), *tmp = st ? NULL : hub_tmp_name(base);
    if (!st && (!target || !tmp)) st = KN_OOM(tl);
    if (!st) {
        strcpy(target, "../../");
        for (size_t i = 0; i < depth; i++) strcat(target, "../");
        strcat(target, "blobs/");
        strcat(target, etag);
        /* symlinkat never writes through an existing name: it fails on one */
        if (symlinkat(target, dfd, tmp) != 0) {
            /* no symlinks on this file system: a hard link to the blob, as huggingface_hub copies */
            int bfd = -1;
            kn_status *bst = hub_open_dir(r->cache, blobs_rel, 0, &bfd);
            int ok = !bst && bfd >= 0 && linkat(bfd, etag, dfd, tmp, 0) == 0;
            kn_status_free(bst);
            if (bfd >= 0) close(bfd);
            if (!ok)
                st = kn_error(KN_ERR_IO, "%s/%s: cannot create the snapshot link: %s", r->cache, rel, strerror(errno));
        }
        if (!st && renameat(dfd, tmp, dfd, base) != 0) {
            st = kn_error(KN_ERR_IO, "%s/%s: %s", r->cache, rel, strerror(errno));
            unlinkat(dfd, tmp, 0);
        }
    }
    if (dfd >= 0) close(dfd);
    free(target);
    free(tmp);
    free(rel);
    free(dir);
    free(blobs_rel);
    return st;
}

/* ---------------------------------------------------------------- one file */

static void hub_norm_etag(char *e) {
    char *s = e;
    if (s[0] == 'W' && s[1] == '/') s += 2;
    size_t n = strlen(s);
    if (n >= 1 && s[0] == '"') {
        s++;
        n--;
    }
    if (n >= 1 && s[n - 1] == '"') n--;
    memmove(e, s, n);
    e[n] = 0;
}

static int hub_valid_etag(const char *e) {
    if (!e[0] || strlen(e) > 128) return 0;
    for (const char *s = e; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.') return 0;
    return e[0] != '.';
}

/* HEAD of a resolve URL (retried on transient errors): etag (malloc'd) and size (-1: unknown). */
static kn_status *hub_head(const hub_ctx *c, const char *url, char **etag, int64_t *size) {
    hub_http h;
    char cerr[CURL_ERROR_SIZE];
    CURLcode rc;
    for (int attempt = 1;; attempt++) {
        hub_http_init(&h);
        rc = hub_request(c, 1, url, 0, 0, &h, cerr);
        /* a redirect without the hub's X-Linked-* headers (a renamed repo): follow it */
        if (rc == CURLE_OK && h.status >= 300 && h.status < 400 && !h.linked_etag[0]) {
            free(h.body);
            hub_http_init(&h);
            rc = hub_request(c, 1, url, 1, 0, &h, cerr);
        }
        if (hub_retry(c, &h, attempt, rc)) {
            free(h.body);
            hub_backoff(attempt);
            continue;
        }
        break;
    }
    if (rc != CURLE_OK || h.status >= 400 || h.status < 200) {
        kn_status *st = hub_http_error(c, "HEAD", url, rc, cerr, &h, NULL);
        free(h.body);
        return st;
    }
    free(h.body);
    char *e = h.linked_etag[0] ? h.linked_etag : h.etag;
    hub_norm_etag(e);
    if (!e[0])
        return kn_error(KN_ERR_IO, "HEAD %s: HTTP %ld without an ETag (is HF_ENDPOINT a Hugging Face hub?)", url,
                        h.status);
    if (!hub_valid_etag(e)) return kn_error(KN_ERR_IO, "HEAD %s: unusable ETag '%s'", url, e);
    *etag = strdup(e);
    *size = h.linked_size >= 0 ? h.linked_size : (h.status == 200 ? h.content_length : -1);
    return *etag ? NULL : KN_OOM(0);
}

/* Opens (creating it when absent) the partial download dfd/name for reading and writing: never
 * through a link, never a file with other names (a hard link planted in a shared cache), never
 * anything but a regular file. */
static kn_status *hub_open_incomplete(int dfd, const char *shown, const char *name, int *fd) {
    *fd = openat(dfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (*fd < 0 && errno == EEXIST) *fd = openat(dfd, name, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (*fd < 0) {
        struct stat sb;
        if (errno == ELOOP || (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode)))
            return kn_error(
                KN_ERR_IO,
                "%s is a symbolic link inside the Hugging Face cache: kiln does not follow links "
                "there (another user of a shared cache could point them at any file); remove it and run again",
                shown);
        return kn_error(KN_ERR_IO, "%s: %s", shown, strerror(errno));
    }
    struct stat sb;
    if (fstat(*fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_nlink != 1) {
        close(*fd);
        *fd = -1;
        return kn_error(KN_ERR_IO,
                        "%s is not a plain file of its own (a link or special file planted in the cache?); "
                        "remove it and run again",
                        shown);
    }
    return NULL;
}

/* Downloads url into blobs/<etag> (nothing to do when the blob is there). size: what HEAD
 * announced (-1: unknown); the body may not exceed it. */
static kn_status *hub_fetch_blob(const hub_ctx *c, const hub_repo *r, const char *path, const char *url,
                                 const char *etag, int64_t size) {
    char *blobs_rel = hub_fmt("%s/blobs", r->folder);
    char *locks_rel = hub_fmt(".locks/%s", r->folder);
    char *blob = hub_fmt("%s/blobs/%s", r->repo_dir, etag);
    char *inc = hub_fmt("%s/blobs/%s.incomplete", r->repo_dir, etag);
    char *inc_name = hub_fmt("%s.incomplete", etag);
    char *lock_name = hub_fmt("%s.lock", etag);
    kn_status *st = NULL;
    int lock_fd = -1, bfd = -1, lfd = -1, fd = -1;
    struct stat sb;
    if (!blobs_rel || !locks_rel || !blob || !inc || !inc_name || !lock_name) {
        st = KN_OOM(0);
        goto out;
    }
    if ((st = hub_open_dir(r->cache, blobs_rel, 1, &bfd))) goto out;
    int have_blob = hub_entry(bfd, etag, &sb);
    if (have_blob < 0) {
        st =
            kn_error(KN_ERR_IO, "%s is not a plain file (a link planted in the cache?); remove it and run again", blob);
        goto out;
    }
    if (have_blob) goto out;
    if ((st = hub_open_dir(r->cache, locks_rel, 1, &lfd))) goto out;
    /* the lock huggingface_hub takes too (filelock: flock on the same file) */
    lock_fd = openat(lfd, lock_name, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
    if (lock_fd < 0 || fstat(lock_fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = errno == ELOOP ? hub_symlink_error(r->lock_dir, lock_name)
                            : kn_error(KN_ERR_IO, "%s/%s: %s", r->lock_dir, lock_name,
                                       lock_fd < 0 ? strerror(errno) : "not a plain file");
        goto out;
    }
    while (flock(lock_fd, LOCK_EX) != 0)
        if (errno != EINTR) {
            st = kn_error(KN_ERR_IO, "%s/%s: cannot lock: %s", r->lock_dir, lock_name, strerror(errno));
            goto out;
        }
    if (hub_entry(bfd, etag, &sb) == 1) goto out; /* another process finished it meanwhile */
    if ((st = hub_open_incomplete(bfd, inc, inc_name, &fd))) goto out;
    /* the most bytes the body may have: what HEAD announced, else the configured cap */
    int64_t cap = size >= 0 ? size : c->max_unknown;

    for (int attempt = 1;; attempt++) {
        if (fstat(fd, &sb) != 0) {
            st = kn_error(KN_ERR_IO, "%s: %s", inc, strerror(errno));
            goto out;
        }
        int64_t have = (int64_t)sb.st_size;
        if (size >= 0 && have > size) {
            if (ftruncate(fd, 0) != 0) {
                st = kn_error(KN_ERR_IO, "%s: %s", inc, strerror(errno));
                goto out;
            }
            have = 0;
        }
        if (size < 0 || have < size) {
            hub_http h;
            hub_http_init(&h);
            h.fd = fd;
            h.file_off = h.off0 = have;
            h.file_cap = cap;
            h.label = path;
            h.total = size;
            h.progress = c->progress;
            char cerr[CURL_ERROR_SIZE];
            CURLcode rc = hub_request(c, 0, url, 1, have, &h, cerr);
            if (h.shown || (h.progress && h.started)) hub_show(&h, 1);
            if (h.write_errno) {
                st = kn_error(KN_ERR_IO, "%s: write failed: %s (disk full?)", inc, strerror(h.write_errno));
                free(h.body);
                goto out;
            }
            if (h.over_cap) {
                /* what came is not the announced file: nothing of it is kept */
                unlinkat(bfd, inc_name, 0);
                st = size >= 0 ? kn_error(KN_ERR_IO,
                                          "GET %s: the server sent more than the %lld bytes the hub announced; the "
                                          "download was stopped and deleted",
                                          url, (long long)size)
                               : kn_error(KN_ERR_IO,
                                          "GET %s: the body exceeds KILN_HUB_MAX_FILE_SIZE (%lld bytes); the download "
                                          "was stopped and deleted",
                                          url, (long long)cap);
                free(h.body);
                goto out;
            }
            if (h.range_mismatch ||
                (rc == CURLE_OK && h.status == 416)) { /* a resume the server would not do: restart */
                free(h.body);
                if (ftruncate(fd, 0) != 0) {
                    st = kn_error(KN_ERR_IO, "%s: %s", inc, strerror(errno));
                    goto out;
                }
                if (attempt < HUB_ATTEMPTS) continue;
                st = kn_error(KN_ERR_IO, "GET %s: the server did not honour the resume request (Range: bytes=%lld-)",
                              url, (long long)have);
                goto out;
            }
            if (rc != CURLE_OK || h.status < 200 || h.status >= 300) {
                if (hub_retry(c, &h, attempt, rc)) {
                    free(h.body);
                    hub_backoff(attempt);
                    continue;
                }
                char keep[4200] = "";
                if (fstat(fd, &sb) == 0 && sb.st_size > 0)
                    snprintf(keep, sizeof keep, "; %lld bytes are kept in %s and the next run resumes from there",
                             (long long)sb.st_size, inc);
                st = hub_http_error(c, "GET", url, rc, cerr, &h, keep);
                free(h.body);
                goto out;
            }
            free(h.body);
        }
        if (fstat(fd, &sb) != 0) {
            st = kn_error(KN_ERR_IO, "%s: %s", inc, strerror(errno));
            goto out;
        }
        if (size >= 0 && (int64_t)sb.st_size < size && attempt < HUB_ATTEMPTS &&
            !(c->deadline > 0 && hub_now() >= c->deadline)) {
            hub_backoff(attempt);
            continue;
        } /* cut short */
        if (size >= 0 && (int64_t)sb.st_size != size) {
            unlinkat(bfd, inc_name, 0);
            st = kn_error(KN_ERR_IO,
                          "GET %s: got %lld bytes, the hub announced %lld; the partial file was deleted, run again",
                          url, (long long)sb.st_size, (long long)size);
            goto out;
        }
        break;
    }
    if (hub_is_hex(etag, 64)) { /* an LFS file: its ETag is the SHA-256 of the content */
        char hex[65];
        st = hub_sha256_fd(fd, inc, hex);
        if (st) goto out;
        if (strcasecmp(hex, etag) != 0) {
            unlinkat(bfd, inc_name, 0);
            st = kn_error(
                KN_ERR_IO,
                "GET %s: SHA-256 mismatch for %s: expected %s, got %s; the corrupted download was deleted, run again",
                url, path, etag, hex);
            goto out;
        }
    }
    if (close(fd) != 0) {
        fd = -1;
        st = kn_error(KN_ERR_IO, "%s: write failed: %s (disk full?)", inc, strerror(errno));
        goto out;
    }
    fd = -1;
    if (renameat(bfd, inc_name, bfd, etag) != 0) st = kn_error(KN_ERR_IO, "%s: %s", blob, strerror(errno));
out:
    if (fd >= 0) close(fd);
    if (lock_fd >= 0) close(lock_fd); /* releases the flock */
    if (bfd >= 0) close(bfd);
    if (lfd >= 0) close(lfd);
    free(blobs_rel);
    free(locks_rel);
    free(blob);
    free(inc);
    free(inc_name);
    free(lock_name);
    return st;
}

/* ---------------------------------------------------------------- what to fetch */

typedef struct hub_list {
    char **v;
    int n, cap;
} hub_list;

static int hub_list_has(const hub_list *l, const char *s) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s)) return 1;
    return 0;
}
static int hub_list_add(hub_list *l, const char *s) {
    if (hub_list_has(l, s)) return 0;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        char **v = realloc(l->v, sizeof *v * (size_t)cap);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(s))) return -1;
    l->n++;
    return 0;
}
static void hub_list_free(hub_list *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int hub_same_dir(const char *a, const char *b) {
    const char *sa = strrchr(a, '/'), *sb = strrchr(b, '/');
    size_t la = sa ? (size_t)(sa - a) : 0, lb = sb ? (size_t)(sb - b) : 0;
    return la == lb && !memcmp(a, b, la);
}

/* The .onnx file an external-data file belongs to, judged by its name: "X.data" / "X_data" belongs
 * to X when X is a .onnx sibling, or to X.onnx. NULL when it names none. */
static const char *hub_data_owner(const hub_list *sib, const char *data) {
    size_t n = strlen(data);
    if (n <= 5 || !(hub_ends_with(data, ".data") || hub_ends_with(data, "_data"))) return NULL;
    char base[4096];
    snprintf(base, sizeof base, "%.*s", (int)(n - 5), data);
    for (int i = 0; i < sib->n; i++) {
        const char *s = sib->v[i];
        if (!hub_ends_with(s, ".onnx")) continue;
        if (!strcmp(s, base)) return s;
        size_t sl = strlen(s);
        if (sl - 5 == strlen(base) && !memcmp(s, base, sl - 5)) return s;
    }
    return NULL;
}

static kn_status *hub_pick(const hub_repo *r, const char *commit, const hub_list *sib, const char *onnx_file,
                           hub_list *want) {
    static const char *const files[] = {"config.json",
                                        "tokenizer.json",
                                        "tokenizer_config.json",
                                        "special_tokens_map.json",
                                        "vocab.txt",
                                        "merges.txt",
                                        "vocab.json",
                                        "preprocessor_config.json",
                                        "generation_config.json",
                                        "modules.json",
                                        "sentence_bert_config.json"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        if (hub_list_has(sib, files[i]) && hub_list_add(want, files[i])) return KN_OOM(0);
    /* the sentence-transformers pooling module: 1_Pooling/config.json */
    for (int i = 0; i < sib->n; i++) {
        const char *s = sib->v[i], *sl = strchr(s, '/');
        if (sl && !strcmp(sl, "/config.json") && strstr(s, "Pooling") && strstr(s, "Pooling") < sl &&
            hub_list_add(want, s))
            return KN_OOM(0);
    }
    if (onnx_file && onnx_file[0] == '/') return NULL; /* a local model file: configs only */
    char names[1024] = "";
    int n_onnx = 0, n_cand = 0;
    const char *cand = NULL;
    for (int i = 0; i < sib->n; i++) {
        const char *s = sib->v[i];
        if (!hub_ends_with(s, ".onnx")) continue;
        n_onnx++;
        size_t l = strlen(names);
        if (l < sizeof names - 100) snprintf(names + l, sizeof names - l, "%s%s", l ? ", " : "", s);
        else if (!strstr(names, "...")) strcat(names, ", ...");
        if (!strchr(s, '/') || (!strncmp(s, "onnx/", 5) && !strchr(s + 5, '/'))) {
            cand = s;
            n_cand++;
        }
    }
    const char *model = NULL;
    if (onnx_file) {
        const char *f = onnx_file;
        while (!strncmp(f, "./", 2)) f += 2;
        if (!hub_list_has(sib, f))
            return kn_error(KN_ERR_IO, "%s@%s (commit %s) has no file '%s'; its ONNX files: %s", r->repo, r->rev,
                            commit, f, n_onnx ? names : "none");
        model = f;
    } else if (hub_list_has(sib, "model.onnx")) model = "model.onnx";
    else if (hub_list_has(sib, "onnx/model.onnx")) model = "onnx/model.onnx";
    else if (n_cand == 1) model = cand;
    else if (n_onnx == 0)
        return kn_error(KN_ERR_IO, "%s@%s (commit %s) has no .onnx file: kiln needs an ONNX export of the model",
                        r->repo, r->rev, commit);
    else
        return kn_error(KN_ERR_IO,
                        "%s@%s (commit %s) has no model.onnx or onnx/model.onnx; choose one with --onnx-file: %s",
                        r->repo, r->rev, commit, names);
    if (hub_list_add(want, model)) return KN_OOM(0);
    /* its external data: files beside it ending in .data / _data that belong to it (model.onnx_data,
     * model.onnx.data, model_data) or to no other .onnx file in the repo */
    for (int i = 0; i < sib->n; i++) {
        const char *s = sib->v[i];
        if (!hub_same_dir(s, model) || !(hub_ends_with(s, ".data") || hub_ends_with(s, "_data"))) continue;
        const char *owner = hub_data_owner(sib, s);
        if ((!owner || !strcmp(owner, model)) && hub_list_add(want, s)) return KN_OOM(0);
    }
    return NULL;
}

/* ---------------------------------------------------------------- the download */

static kn_status *hub_download(hub_ctx *c, const hub_repo *r, const char *onnx_file, char **dir) {
    kn_status *st = NULL;
    char *rev_e = hub_escape(r->rev, 0);
    char *api = rev_e ? hub_fmt("%s/api/models/%s/revision/%s", c->endpoint, r->repo, rev_e) : NULL;
    free(rev_e);
    if (!api) return KN_OOM(0);
    hub_http h;
    char cerr[CURL_ERROR_SIZE];
    CURLcode rc;
    for (int attempt = 1;; attempt++) {
        hub_http_init(&h);
        h.body_max = HUB_API_MAX;
        rc = hub_request(c, 0, api, 1, 0, &h, cerr);
        if (hub_retry(c, &h, attempt, rc)) {
            free(h.body);
            hub_backoff(attempt);
            continue;
        }
        break;
    }
    if (h.body_capped && h.status == 200) {
        st = kn_error(KN_ERR_IO, "GET %s: the listing is larger than %d MB; is HF_ENDPOINT a Hugging Face hub?", api,
                      HUB_API_MAX >> 20);
        free(h.body);
        free(api);
        return st;
    }
    if (rc != CURLE_OK || h.status != 200) {
        st = hub_http_error(c, "GET", api, rc, cerr, &h, NULL);
        free(h.body);
        free(api);
        return st;
    }
    json_object *j = h.body ? json_tokener_parse(h.body) : NULL, *v;
    free(h.body);
    hub_list sib = {0}, want = {0};
    char **etags = NULL;
    char commit[64] = "";
    if (!j || !json_object_is_type(j, json_type_object)) {
        st = kn_error(KN_ERR_IO, "GET %s: the answer is not a JSON object", api);
        goto out;
    }
    if (json_object_object_get_ex(j, "sha", &v) && json_object_is_type(v, json_type_string))
        snprintf(commit, sizeof commit, "%s", json_object_get_string(v));
    if (!hub_is_commit(commit)) {
        st = kn_error(KN_ERR_IO, "GET %s: no commit hash (\"sha\") in the answer", api);
        goto out;
    }
    for (char *s = commit; *s; s++) *s = (char)tolower((unsigned char)*s);
    if (json_object_object_get_ex(j, "siblings", &v) && json_object_is_type(v, json_type_array))
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            json_object *e = json_object_array_get_idx(v, i), *f;
            if (e && json_object_object_get_ex(e, "rfilename", &f) && json_object_is_type(f, json_type_string) &&
                hub_valid_path(json_object_get_string(f)) && hub_list_add(&sib, json_object_get_string(f))) {
                st = KN_OOM(0);
                goto out;
            }
        }
    if ((st = hub_pick(r, commit, &sib, onnx_file, &want))) goto out;
    if (c->progress) fprintf(stderr, "%s@%s: commit %s, %d files\n", r->repo, r->rev, commit, want.n);
    etags = calloc((size_t)want.n + 1, sizeof *etags);
    if (!etags) {
        st = KN_OOM(0);
        goto out;
    }
    /* every blob first, then the snapshot links: a snapshot never shows a model whose companions are missing */
    for (int i = 0; i < want.n && !st; i++) {
        char *pe = hub_escape(want.v[i], 1);
        char *url = pe ? hub_fmt("%s/%s/resolve/%s/%s", c->endpoint, r->repo, commit, pe) : NULL;
        free(pe);
        if (!url) {
            st = KN_OOM(0);
            break;
        }
        int64_t size = -1;
        st = hub_head(c, url, &etags[i], &size);
        if (!st) st = hub_fetch_blob(c, r, want.v[i], url, etags[i], size);
        free(url);
    }
    for (int i = 0; i < want.n && !st; i++) st = hub_link(r, commit, want.v[i], etags[i]);
    if (!st && strcmp(r->rev, commit) != 0) {
        char *ref = hub_fmt("%s/refs/%s", r->folder, r->rev);
        st = ref ? hub_write_file(r, ref, commit) : KN_OOM(0);
        free(ref);
    }
    if (!st) {
        *dir = hub_fmt("%s/snapshots/%s", r->repo_dir, commit);
        if (!*dir) st = KN_OOM(0);
    }
out:
    if (etags)
        for (int i = 0; i < want.n; i++) free(etags[i]);
    free(etags);
    hub_list_free(&sib);
    hub_list_free(&want);
    if (j) json_object_put(j);
    free(api);
    return st;
}

kn_status *pl_hub_fetch(const char *repo_at_rev, const char *onnx_file, char **dir) {
    *dir = NULL;
    hub_repo r;
    kn_status *st = hub_repo_init(&r, repo_at_rev);
    if (st) {
        hub_repo_free(&r);
        return st;
    }
    if (onnx_file && onnx_file[0] != '/' &&
        !hub_valid_path(onnx_file[0] == '.' && onnx_file[1] == '/' ? onnx_file + 2 : onnx_file)) {
        hub_repo_free(&r);
        return kn_error(KN_ERR_INVALID_ARGUMENT, "'%s' is not a file path inside a repo", onnx_file);
    }
    const char *of = onnx_file;
    while (of && !strncmp(of, "./", 2)) of += 2;
    /* the cache first: a commit is used directly, a branch or tag through refs/<rev> */
    char *commit = hub_is_commit(r.rev) ? strdup(r.rev) : hub_read_ref(&r);
    if (commit) {
        for (char *s = commit; *s; s++) *s = (char)tolower((unsigned char)*s);
        /* a snapshot folder reached through a link is not the cache's own: refuse it */
        char *snap_rel = hub_fmt("%s/snapshots/%s", r.folder, commit);
        int sfd = -1;
        st = snap_rel ? hub_open_dir(r.cache, snap_rel, 0, &sfd) : KN_OOM(0);
        free(snap_rel);
        if (sfd >= 0) close(sfd);
        if (st) {
            free(commit);
            hub_repo_free(&r);
            return st;
        }
        char *snap = hub_fmt("%s/snapshots/%s", r.repo_dir, commit);
        if (snap && sfd >= 0 && hub_snapshot_ready(snap, of)) {
            *dir = snap;
            free(commit);
            hub_repo_free(&r);
            return NULL;
        }
        free(snap);
    }
    if (hub_env_true("HF_HUB_OFFLINE")) {
        st = kn_error(
            KN_ERR_IO,
            "%s@%s: HF_HUB_OFFLINE is set and the Hugging Face cache has no snapshot of it with %s (looked in %s%s%s)",
            r.repo, r.rev, of ? of : "a model", r.repo_dir, commit ? "/snapshots/" : "", commit ? commit : "");
        free(commit);
        hub_repo_free(&r);
        return st;
    }
    free(commit);
    hub_ctx c = {0};
    const char *ep = getenv("HF_ENDPOINT");
    c.endpoint = strdup(ep && *ep ? ep : "https://huggingface.co");
    if (!c.endpoint) {
        hub_repo_free(&r);
        return KN_OOM(0);
    }
    for (size_t n = strlen(c.endpoint); n && c.endpoint[n - 1] == '/';) c.endpoint[--n] = 0;
    char *tok = hub_token();
    if (tok) {
        c.auth = hub_fmt("Authorization: Bearer %s", tok);
        free(tok);
    }
    c.repo = r.repo;
    c.stall_s = hub_env_long("HF_HUB_DOWNLOAD_TIMEOUT", 30);
    c.low_speed = hub_env_long("KILN_HUB_LOW_SPEED_LIMIT", 1024);
    c.deadline = hub_now() + (double)hub_env_long("KILN_HUB_DEADLINE", 6 * 3600);
    c.max_unknown = hub_env_long("KILN_HUB_MAX_FILE_SIZE", (long)256 << 30);
    c.progress = isatty(STDERR_FILENO);
    st = hub_download(&c, &r, of, dir);
    free(c.endpoint);
    free(c.auth);
    hub_repo_free(&r);
    return st;
}

kn_status *pl_hub_resolve(const char *path_or_repo, const char *onnx_file, char **dir) {
    *dir = NULL;
    if (hub_exists(path_or_repo)) {
        *dir = strdup(path_or_repo);
        return *dir ? NULL : KN_OOM(strlen(path_or_repo));
    }
    char *repo, *rev;
    if (!hub_parse_repo(path_or_repo, &repo, &rev))
        return kn_error(KN_ERR_IO, "%s: no such model folder (and not a Hugging Face repo id: org/name[@revision])",
                        path_or_repo);
    free(repo);
    free(rev);
    kn_status *st = pl_hub_fetch(path_or_repo, onnx_file, dir);
    return st ? kn_error_wrap(st, "%s is not a local folder; as a Hugging Face repo: ", path_or_repo) : NULL;
}
