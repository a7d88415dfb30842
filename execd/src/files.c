/*
 * files.c: the file and directory routes (/files/..., /directories/...).
 *
 * Uploads are streamed: the body decoder hands each piece of the multipart body to mp_feed,
 * which calls back here with part boundaries and data; file parts are written straight to
 * their destination. A "metadata" part (JSON {"path","mode"?,"owner"?,"group"?}) must come
 * before the "file" part it describes (the SDK always sends them in that order); the n-th
 * metadata pairs with the n-th file. Errors are remembered and answered as a 400 once the
 * whole body has been read, so the connection stays usable.
 *
 * Modes travel as decimal numbers whose digits are octal (755 means 0755). Directory walks use
 * lstat and never follow symlinks. All descriptors are opened close-on-exec.
 */
#include "execd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "glob.h"
#include "json.h"

#define MAX_PATHS 256
#define META_MAX (64 * 1024)
#define REPLACE_MAX (64 * 1024 * 1024)

/* ---- helpers ------------------------------------------------------------------------------- */

/* "755" (as a JSON number) -> 0755. -1 if not made of octal digits or out of range. */
static int mode_from_json(const struct json *j, mode_t *out)
{
    long long v, m = 0, mul = 1;

    if (!json_int(j, 0, 7777, &v))
        return -1;
    while (v) {
        if (v % 10 > 7)
            return -1;
        m += (v % 10) * mul;
        mul *= 8;
        v /= 10;
    }
    *out = (mode_t)m;
    return 0;
}

static int resolve_user(const char *name, uid_t *uid)
{
    struct passwd *pw;
    char *end;
    unsigned long v;

    if (!name || !*name)
        return 1;
    pw = getpwnam(name);
    if (pw) {
        *uid = pw->pw_uid;
        return 0;
    }
    v = strtoul(name, &end, 10);
    if (*end || name[0] == '-')
        return -1;
    *uid = (uid_t)v;
    return 0;
}

static int resolve_group(const char *name, gid_t *gid)
{
    struct group *gr;
    char *end;
    unsigned long v;

    if (!name || !*name)
        return 1;
    gr = getgrnam(name);
    if (gr) {
        *gid = gr->gr_gid;
        return 0;
    }
    v = strtoul(name, &end, 10);
    if (*end || name[0] == '-')
        return -1;
    *gid = (gid_t)v;
    return 0;
}

static const char *jstr(const struct json *obj, const char *key)
{
    const struct json *j = json_get(obj, key);
    return j && j->type == JSON_STRING ? j->str : NULL;
}

/* Applies {"mode","owner","group"} from a JSON object to path. Returns 0 or -1 (errno set). */
static int apply_perms(const char *path, const struct json *perm, const char **what)
{
    const struct json *mj = json_get(perm, "mode");
    const char *owner = jstr(perm, "owner"), *group = jstr(perm, "group");
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;
    mode_t mode;

    if (mj && mj->type != JSON_NULL) {
        if (mode_from_json(mj, &mode) < 0) {
            *what = "invalid mode";
            errno = EINVAL;
            return -1;
        }
        if (chmod(path, mode) < 0) {
            *what = "chmod";
            return -1;
        }
    }
    if (resolve_user(owner, &uid) < 0 || resolve_group(group, &gid) < 0) {
        *what = "unknown owner or group";
        errno = EINVAL;
        return -1;
    }
    if ((owner && *owner) || (group && *group)) {
        if (lchown(path, uid, gid) < 0) {
            *what = "chown";
            return -1;
        }
    }
    return 0;
}

/* mkdir -p with the given mode for created directories. */
static int mkdirs(const char *path, mode_t mode)
{
    char tmp[PATH_MAX];
    size_t n = strlen(path), i;
    struct stat st;

    if (n == 0 || n >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, n + 1);
    for (i = 1; i <= n; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0')
            continue;
        tmp[i] = '\0';
        if (mkdir(tmp, mode) < 0 && errno != EEXIST)
            return -1;
        if (stat(tmp, &st) < 0)
            return -1;
        if (!S_ISDIR(st.st_mode)) {
            errno = ENOTDIR;
            return -1;
        }
        if (i < n)
            tmp[i] = '/';
    }
    return 0;
}

static int mkparents(const char *path)
{
    char tmp[PATH_MAX];
    char *slash;

    if (strlen(path) >= sizeof(tmp))
        return -1;
    memcpy(tmp, path, strlen(path) + 1);
    slash = strrchr(tmp, '/');
    if (!slash || slash == tmp)
        return 0;
    *slash = '\0';
    return mkdirs(tmp, 0755);
}

static const char *type_name(mode_t m)
{
    if (S_ISREG(m))
        return "file";
    if (S_ISDIR(m))
        return "directory";
    if (S_ISLNK(m))
        return "symlink";
    return "other";
}

static void put_fileinfo(struct buf *b, const char *path, const struct stat *st)
{
    char ts[48], name[64];
    struct passwd *pw = getpwuid(st->st_uid);
    struct group *gr = getgrgid(st->st_gid);
    unsigned perm = st->st_mode & 07777;

    buf_puts(b, "{\"path\":");
    json_put_cstr(b, path);
    buf_printf(b, ",\"type\":\"%s\",\"size\":%lld", type_name(st->st_mode), (long long)st->st_size);
    fmt_time_ns(ts, sizeof(ts), (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec);
    buf_printf(b, ",\"modified_at\":\"%s\"", ts);
    fmt_time_ns(ts, sizeof(ts), (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec);
    buf_printf(b, ",\"created_at\":\"%s\",\"owner\":", ts);
    if (pw) {
        json_put_cstr(b, pw->pw_name);
    } else {
        snprintf(name, sizeof(name), "%u", (unsigned)st->st_uid);
        json_put_cstr(b, name);
    }
    buf_puts(b, ",\"group\":");
    if (gr) {
        json_put_cstr(b, gr->gr_name);
    } else {
        snprintf(name, sizeof(name), "%u", (unsigned)st->st_gid);
        json_put_cstr(b, name);
    }
    /* permission bits written as octal digits, sent as a decimal number */
    buf_printf(b, ",\"mode\":%o}", perm);
}

static struct json *body_json(struct conn *c, enum json_type want)
{
    struct json *j = json_parse(c->reqbody.data ? c->reqbody.data : "", c->reqbody.len);

    if (!j || j->type != want) {
        json_free(j);
        conn_reply_error(c, 400, "INVALID_REQUEST_BODY", "request body must be a JSON %s",
                         want == JSON_OBJECT ? "object" : "array");
        return NULL;
    }
    return j;
}

static void free_vals(char **v, int n)
{
    int i;
    for (i = 0; i < n; i++)
        free(v[i]);
}

/* ---- upload -------------------------------------------------------------------------------- */

struct meta {
    char *path;
    struct json *json;
};

struct upload {
    struct mp mp;
    int kind; /* 0 other, 1 metadata, 2 file */
    struct buf meta_buf;
    struct meta metas[MAX_PATHS];
    int nmeta, nfile;
    int fd;
    int status;
    const char *code;
    char msg[512];
};

static int up_fail(struct upload *u, int status, const char *code, const char *fmt, const char *arg)
{
    if (!u->status) {
        u->status = status;
        u->code = code;
        snprintf(u->msg, sizeof(u->msg), fmt, arg ? arg : "", arg ? strerror(errno) : "");
    }
    return -1;
}

static int up_on_part(void *ud, const struct mp_part *p)
{
    struct upload *u = ud;
    struct meta *m;
    int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;

    u->kind = 0;
    if (strcmp(p->name, "metadata") == 0) {
        u->kind = 1;
        buf_reset(&u->meta_buf);
        return 0;
    }
    if (strcmp(p->name, "file") != 0)
        return 0;
    u->kind = 2;
    if (u->nfile >= u->nmeta)
        return up_fail(u, 400, "INVALID_FILE_METADATA",
                       "a metadata part must precede each file part%s%s", NULL);
    m = &u->metas[u->nfile];
    if (mkparents(m->path) < 0)
        return up_fail(u, 500, "RUNTIME_ERROR", "cannot create parent directories of %s: %s",
                       m->path);
    u->fd = open(m->path, flags, 0644);
    if (u->fd < 0)
        return up_fail(u, 500, "RUNTIME_ERROR", "cannot open %s: %s", m->path);
    return 0;
}

static int up_on_data(void *ud, const char *p, size_t n)
{
    struct upload *u = ud;

    if (u->kind == 1) {
        if (u->meta_buf.len + n > META_MAX)
            return up_fail(u, 400, "INVALID_FILE_METADATA", "metadata part too large%s%s", NULL);
        return buf_append(&u->meta_buf, p, n);
    }
    if (u->kind == 2 && u->fd >= 0) {
        while (n) {
            ssize_t w = write(u->fd, p, n);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return up_fail(u, 500, "RUNTIME_ERROR", "write %s: %s", u->metas[u->nfile].path);
            p += w;
            n -= (size_t)w;
        }
    }
    return 0;
}

static int up_on_part_end(void *ud)
{
    struct upload *u = ud;

    if (u->kind == 1) {
        struct json *j = json_parse(u->meta_buf.data ? u->meta_buf.data : "", u->meta_buf.len);
        const char *path = jstr(j, "path");
        if (!j || j->type != JSON_OBJECT || !path || !*path || strlen(path) >= PATH_MAX) {
            json_free(j);
            return up_fail(u, 400, "INVALID_FILE_METADATA",
                           "metadata must be a JSON object with a non-empty path%s%s", NULL);
        }
        if (u->nmeta >= MAX_PATHS) {
            json_free(j);
            return up_fail(u, 400, "INVALID_FILE_METADATA", "too many files%s%s", NULL);
        }
        u->metas[u->nmeta].path = strdup(path);
        u->metas[u->nmeta].json = j;
        u->nmeta++;
    } else if (u->kind == 2) {
        struct meta *m = &u->metas[u->nfile];
        const char *what = "";
        int rc = close(u->fd);
        u->fd = -1;
        u->nfile++;
        if (rc < 0)
            return up_fail(u, 500, "RUNTIME_ERROR", "close %s: %s", m->path);
        if (apply_perms(m->path, m->json, &what) < 0) {
            int e = errno;
            snprintf(u->msg, sizeof(u->msg), "%s %s: %s", what, m->path, strerror(e));
            u->status = e == EINVAL ? 400 : 500;
            u->code = e == EINVAL ? "INVALID_FILE_METADATA" : "RUNTIME_ERROR";
            return -1;
        }
    }
    u->kind = 0;
    return 0;
}

void files_upload_begin(struct conn *c)
{
    static const struct mp_callbacks cb = {up_on_part, up_on_data, up_on_part_end};
    struct upload *u = calloc(1, sizeof(*u));
    char boundary[256];

    if (!u) {
        c->err_status = 500;
        c->err_code = "RUNTIME_ERROR";
        c->err_msg = "out of memory";
        return;
    }
    u->fd = -1;
    c->up = u;
    if (mp_boundary_from_content_type(http_header(&c->req, "Content-Type"), boundary,
                                      sizeof(boundary)) < 0 ||
        mp_init(&u->mp, boundary, &cb, u) < 0) {
        u->status = 400;
        u->code = "INVALID_FILE";
        snprintf(u->msg, sizeof(u->msg),
                 "Content-Type must be multipart/form-data with a boundary");
    }
}

int files_upload_data(struct conn *c, const char *p, size_t n)
{
    struct upload *u = c->up;

    if (!u || u->status)
        return -1;
    if (mp_feed(&u->mp, p, n) < 0 && !u->status) {
        u->status = 400;
        u->code = "INVALID_FILE";
        snprintf(u->msg, sizeof(u->msg), "malformed multipart body: %s",
                 u->mp.error ? u->mp.error : "parse error");
    }
    return u->status ? -1 : 0;
}

void files_upload_end(struct conn *c)
{
    struct upload *u = c->up;

    if (!u) {
        conn_reply_error(c, 500, "RUNTIME_ERROR", "upload state lost");
        return;
    }
    if (!u->status && mp_finish(&u->mp) < 0) {
        u->status = 400;
        u->code = "INVALID_FILE";
        snprintf(u->msg, sizeof(u->msg), "malformed multipart body: %s",
                 u->mp.error ? u->mp.error : "truncated");
    }
    if (!u->status && u->nfile == 0) {
        u->status = 400;
        u->code = "INVALID_FILE";
        snprintf(u->msg, sizeof(u->msg), "no file part in the form");
    }
    if (!u->status && u->nmeta != u->nfile) {
        u->status = 400;
        u->code = "INVALID_FILE";
        snprintf(u->msg, sizeof(u->msg), "%d metadata parts but %d file parts", u->nmeta, u->nfile);
    }
    if (u->status)
        conn_reply_error(c, u->status, u->code, "%s", u->msg);
    else
        conn_reply_empty(c);
}

void files_upload_free(struct conn *c)
{
    struct upload *u = c->up;
    int i;

    if (!u)
        return;
    if (u->fd >= 0)
        close(u->fd);
    for (i = 0; i < u->nmeta; i++) {
        free(u->metas[i].path);
        json_free(u->metas[i].json);
    }
    buf_free(&u->meta_buf);
    mp_free(&u->mp);
    free(u);
    c->up = NULL;
}

/* ---- download ------------------------------------------------------------------------------ */

/* Parses the first range of a "bytes=" header against size. 0 ok, -1 unsatisfiable/malformed. */
static int parse_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len)
{
    const char *s;
    char *end;
    unsigned long long a, b;

    if (strncmp(h, "bytes=", 6) != 0)
        return -1;
    s = h + 6;
    while (*s == ' ')
        s++;
    if (*s == '-') {
        if (s[1] < '0' || s[1] > '9')
            return -1;
        b = strtoull(s + 1, &end, 10);
        if ((*end && *end != ',' && *end != ' ') || b == 0 || size == 0)
            return -1;
        if (b > size)
            b = size;
        *off = size - b;
        *len = b;
        return 0;
    }
    if (*s < '0' || *s > '9')
        return -1;
    a = strtoull(s, &end, 10);
    if (*end != '-' || a >= size)
        return -1;
    s = end + 1;
    if (*s >= '0' && *s <= '9') {
        b = strtoull(s, &end, 10);
        if ((*end && *end != ',' && *end != ' ') || b < a)
            return -1;
        if (b >= size)
            b = size - 1;
    } else if (*s == '\0' || *s == ',' || *s == ' ') {
        b = size - 1;
    } else {
        return -1;
    }
    *off = a;
    *len = b - a + 1;
    return 0;
}

void files_handle_download(struct conn *c)
{
    char *path = http_query_get(c->req.query, "path");
    char *offs = http_query_get(c->req.query, "offset"),
         *lims = http_query_get(c->req.query, "limit");
    const char *range = http_header(&c->req, "Range"), *base;
    struct buf hdr = {0};
    struct stat st;
    uint64_t off = 0, len;
    long long line_off = 1, line_lim = -1;
    int fd = -1, by_lines = (offs && *offs) || (lims && *lims);

    if (!path || !*path) {
        conn_reply_error(c, 400, "MISSING_QUERY", "missing query parameter 'path'");
        goto out;
    }
    /* line-based read (offset: 1-based first line, limit: line count); an empty value counts as
     * absent, as in upstream's agent. Checked before the file is opened. */
    if (by_lines && range) {
        conn_reply_error(c, 400, "INVALID_REQUEST_BODY",
                         "line-based reading (offset/limit) and byte range (Range header) are "
                         "mutually exclusive");
        goto out;
    }
    if (offs && *offs && (line_off = line_param(offs)) < 0) {
        conn_reply_error(c, 400, "INVALID_REQUEST_BODY",
                         "invalid query parameter 'offset': %s (an integer >= 1)", offs);
        goto out;
    }
    if (lims && *lims && (line_lim = line_param(lims)) < 0) {
        conn_reply_error(c, 400, "INVALID_REQUEST_BODY",
                         "invalid query parameter 'limit': %s (an integer >= 1)", lims);
        goto out;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        conn_reply_error(c, errno == ENOENT || errno == ENOTDIR ? 404 : 500,
                         errno == ENOENT || errno == ENOTDIR ? "FILE_NOT_FOUND" : "RUNTIME_ERROR",
                         "file not found: %s", path);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        conn_reply_error(c, 400, "INVALID_FILE", "not a regular file: %s", path);
        goto out;
    }
    if (by_lines) {
        conn_send_lines(c, fd, line_off, line_lim);
        fd = -1; /* owned by the connection now */
        goto out;
    }
    len = (uint64_t)st.st_size;
    base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    buf_puts(&hdr, "Content-Disposition: attachment; filename=\"");
    for (; *base; base++)
        if (*base != '"' && *base != '\\' && (unsigned char)*base >= 0x20)
            buf_append(&hdr, base, 1);
    buf_puts(&hdr, "\"\r\nAccept-Ranges: bytes\r\n");
    if (range) {
        if (parse_range(range, (uint64_t)st.st_size, &off, &len) < 0) {
            char cr[64];
            snprintf(cr, sizeof(cr), "Content-Range: bytes */%lld\r\n", (long long)st.st_size);
            /* reuse conn_reply_error's body, with the Content-Range header */
            {
                struct buf b = {0};
                buf_puts(&b,
                         "{\"code\":\"UNKNOWN\",\"message\":\"invalid or unsatisfiable range\"}");
                conn_reply(c, 416, "application/json", b.data, b.len, cr);
                buf_free(&b);
            }
            goto out;
        }
        buf_printf(&hdr, "Content-Range: bytes %llu-%llu/%lld\r\n", (unsigned long long)off,
                   (unsigned long long)(off + len - 1), (long long)st.st_size);
        conn_send_file(c, 206, hdr.data, fd, off, len);
    } else {
        conn_send_file(c, 200, hdr.data, fd, 0, len);
    }
    fd = -1; /* owned by the connection now */
out:
    if (fd >= 0)
        close(fd);
    buf_free(&hdr);
    free(path);
    free(offs);
    free(lims);
}

/* ---- info, delete, directories ------------------------------------------------------------- */

void files_handle_info(struct conn *c)
{
    char *paths[MAX_PATHS];
    int n = http_query_getall(c->req.query, "path", paths, MAX_PATHS), i;
    struct buf b = {0};
    struct stat st;

    if (n == 0) {
        conn_reply_error(c, 400, "MISSING_QUERY", "missing query parameter 'path'");
        return;
    }
    buf_puts(&b, "{");
    for (i = 0; i < n; i++) {
        if (lstat(paths[i], &st) < 0) {
            conn_reply_error(c, 404, "FILE_NOT_FOUND", "file not found: %s", paths[i]);
            goto out;
        }
        if (i)
            buf_puts(&b, ",");
        json_put_cstr(&b, paths[i]);
        buf_puts(&b, ":");
        put_fileinfo(&b, paths[i], &st);
    }
    buf_puts(&b, "}");
    conn_reply_json(c, 200, &b);
out:
    buf_free(&b);
    free_vals(paths, n);
}

void files_handle_delete(struct conn *c)
{
    char *paths[MAX_PATHS];
    int n = http_query_getall(c->req.query, "path", paths, MAX_PATHS), i;
    struct stat st;

    if (n == 0) {
        conn_reply_error(c, 400, "MISSING_QUERY", "missing query parameter 'path'");
        return;
    }
    for (i = 0; i < n; i++) {
        if (lstat(paths[i], &st) < 0) {
            if (errno == ENOENT)
                continue;
            conn_reply_error(c, 500, "RUNTIME_ERROR", "stat %s: %s", paths[i], strerror(errno));
            goto out;
        }
        if (S_ISDIR(st.st_mode)) {
            conn_reply_error(c, 500, "RUNTIME_ERROR", "%s is a directory", paths[i]);
            goto out;
        }
        if (unlink(paths[i]) < 0 && errno != ENOENT) {
            conn_reply_error(c, 500, "RUNTIME_ERROR", "remove %s: %s", paths[i], strerror(errno));
            goto out;
        }
    }
    conn_reply_empty(c);
out:
    free_vals(paths, n);
}

void files_handle_mkdirs(struct conn *c)
{
    struct json *req = body_json(c, JSON_OBJECT), *e;
    const char *what = "";

    if (!req)
        return;
    for (e = req->child; e; e = e->next) {
        mode_t mode = 0755;
        const struct json *mj = json_get(e, "mode");
        if (!e->key_len || strlen(e->key) != e->key_len || e->type != JSON_OBJECT ||
            (mj && mj->type != JSON_NULL && mode_from_json(mj, &mode) < 0)) {
            conn_reply_error(c, 400, "INVALID_REQUEST_BODY", "invalid entry for '%s'", e->key);
            goto out;
        }
        if (mkdirs(e->key, mode) < 0 || apply_perms(e->key, e, &what) < 0) {
            conn_reply_error(c, 500, "RUNTIME_ERROR", "mkdir %s: %s", e->key, strerror(errno));
            goto out;
        }
    }
    conn_reply_empty(c);
out:
    json_free(req);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP || flag == FTW_D)
        return rmdir(p) < 0 && errno != ENOENT ? -1 : 0;
    return unlink(p) < 0 && errno != ENOENT ? -1 : 0;
}

void files_handle_rmdirs(struct conn *c)
{
    char *paths[MAX_PATHS];
    int n = http_query_getall(c->req.query, "path", paths, MAX_PATHS), i;
    struct stat st;

    if (n == 0) {
        conn_reply_error(c, 400, "MISSING_QUERY", "missing query parameter 'path'");
        return;
    }
    for (i = 0; i < n; i++) {
        if (lstat(paths[i], &st) < 0 && errno == ENOENT)
            continue;
        if (!S_ISDIR(st.st_mode)) {
            if (unlink(paths[i]) < 0 && errno != ENOENT)
                goto fail;
            continue;
        }
        if (nftw(paths[i], rm_one, 32, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT)
            goto fail;
    }
    conn_reply_empty(c);
    free_vals(paths, n);
    return;
fail:
    conn_reply_error(c, 500, "RUNTIME_ERROR", "remove %s: %s", paths[i], strerror(errno));
    free_vals(paths, n);
}

/* ---- listing and search -------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted entry names of dir (without . and ..). Returns the count or -1. */
static int read_names(const char *dir, char ***out)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **v = NULL;
    int n = 0, cap = 0;

    if (!d)
        return -1;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (n == cap) {
            char **nv = realloc(v, sizeof(char *) * (size_t)(cap ? cap * 2 : 32));
            if (!nv)
                break;
            v = nv;
            cap = cap ? cap * 2 : 32;
        }
        v[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n)
        qsort(v, (size_t)n, sizeof(char *), cmp_str);
    *out = v;
    return n;
}

struct walk {
    struct buf *out;
    int count;
    const char *pattern; /* search only */
    size_t root_len;
};

static void join(char *out, size_t n, const char *dir, const char *name)
{
    size_t dl = strlen(dir);
    snprintf(out, n, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/", name);
}

static void walk_list(struct walk *w, const char *dir, long depth)
{
    char **names = NULL, path[PATH_MAX];
    int n = read_names(dir, &names), i;
    struct stat st;

    for (i = 0; i < n; i++) {
        join(path, sizeof(path), dir, names[i]);
        if (lstat(path, &st) == 0) {
            if (w->count++)
                buf_puts(w->out, ",");
            put_fileinfo(w->out, path, &st);
            if (S_ISDIR(st.st_mode) && depth > 1)
                walk_list(w, path, depth - 1);
        }
        free(names[i]);
    }
    free(names);
}

void files_handle_list(struct conn *c)
{
    char *path = http_query_get(c->req.query, "path"), *ds = http_query_get(c->req.query, "depth");
    struct buf b = {0};
    struct walk w = {&b, 0, NULL, 0};
    struct stat st;
    long depth = 1;
    char *end;

    if (!path || !*path) {
        conn_reply_error(c, 400, "MISSING_QUERY", "missing query parameter 'path'");
        goto out;
    }
    if (ds && *ds) {
        depth = strtol(ds, &end, 10);
        if (*end || depth < 0) {
            conn_reply_error(c, 400, "INVALID_REQUEST_BODY", "depth must be an integer >= 0");
            goto out;
        }
    }
    if (lstat(path, &st) < 0) {
        conn_reply_error(c, 404, "FILE_NOT_FOUND", "directory not found: %s", path);
        goto out;
    }
    if (!S_ISDIR(st.st_mode)) {
        conn_reply_error(c, 400, "INVALID_FILE", "not a directory (or a symlink): %s", path);
        goto out;
    }
    buf_puts(&b, "[");
    if (depth > 0)
        walk_list(&w, path, depth);
    buf_puts(&b, "]");
    conn_reply_json(c, 200, &b);
out:
    buf_free(&b);
    free(path);
    free(ds);
}

static void walk_search(struct walk *w, const char *dir, int level)
{
    char **names = NULL, path[PATH_MAX];
    int n = read_names(dir, &names), i;
    struct stat st;

    for (i = 0; i < n; i++) {
        join(path, sizeof(path), dir, names[i]);
        if (lstat(path, &st) == 0) {
            const char *rel = path + w->root_len;
            while (*rel == '/')
                rel++;
            if (S_ISDIR(st.st_mode)) {
                if (level < 64)
                    walk_search(w, path, level + 1);
            } else if (glob_match(w->pattern, rel) || glob_match(w->pattern, names[i])) {
                if (w->count++)
                    buf_puts(w->out, ",");
                put_fileinfo(w->out, path, &st);
            }
        }
        free(names[i]);
    }
    free(names);
}

void files_handle_search(struct conn *c)
{
    char *path = http_query_get(c->req.query, "path"),
         *pat = http_query_get(c->req.query, "pattern");
    struct buf b = {0};
    struct walk w = {&b, 0, NULL, 0};
    struct stat st;

    if (!path || !*path) {
        conn_reply_error(c, 400, "MISSING_QUERY", "missing query parameter 'path'");
        goto out;
    }
    if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
        conn_reply_error(c, 404, "FILE_NOT_FOUND", "directory not found: %s", path);
        goto out;
    }
    w.pattern = pat && *pat ? pat : "**";
    w.root_len = strlen(path);
    buf_puts(&b, "[");
    walk_search(&w, path, 0);
    buf_puts(&b, "]");
    conn_reply_json(c, 200, &b);
out:
    buf_free(&b);
    free(path);
    free(pat);
}

/* ---- replace, permissions, mv -------------------------------------------------------------- */

static int read_file(const char *path, struct buf *out, struct stat *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char tmp[65536];
    ssize_t n;

    if (fd < 0)
        return -1;
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode) || st->st_size > REPLACE_MAX) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    while ((n = read(fd, tmp, sizeof(tmp))) > 0)
        buf_append(out, tmp, (size_t)n);
    close(fd);
    return n < 0 ? -1 : 0;
}

static int write_file(const char *path, const struct buf *b)
{
    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    size_t off = 0;

    if (fd < 0)
        return -1;
    while (off < b->len) {
        ssize_t w = write(fd, b->data + off, b->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    return close(fd);
}

void files_handle_replace(struct conn *c)
{
    struct json *req = body_json(c, JSON_OBJECT), *e;
    char *verbose = http_query_get(c->req.query, "verbose");
    struct buf res = {0};
    int nres = 0;

    if (!req)
        goto out;
    buf_puts(&res, "{");
    for (e = req->child; e; e = e->next) {
        const struct json *o = json_get(e, "old"), *nw = json_get(e, "new");
        struct buf in = {0}, outb = {0};
        struct stat st;
        size_t i = 0;
        long count = 0;
        if (!o || o->type != JSON_STRING || !o->len || !nw || nw->type != JSON_STRING) {
            conn_reply_error(c, 400, "INVALID_REQUEST_BODY",
                             "entry '%s' needs a non-empty 'old' and a 'new' string", e->key);
            goto out;
        }
        if (read_file(e->key, &in, &st) < 0) {
            int missing = errno == ENOENT;
            buf_free(&in);
            conn_reply_error(c, missing ? 404 : 500, missing ? "FILE_NOT_FOUND" : "RUNTIME_ERROR",
                             "cannot read %s: %s", e->key, strerror(errno));
            goto out;
        }
        while (i < in.len) {
            char *hit = memmem(in.data + i, in.len - i, o->str, o->len);
            if (!hit) {
                buf_append(&outb, in.data + i, in.len - i);
                break;
            }
            buf_append(&outb, in.data + i, (size_t)(hit - (in.data + i)));
            buf_append(&outb, nw->str, nw->len);
            i = (size_t)(hit - in.data) + o->len;
            count++;
        }
        if (count && write_file(e->key, &outb) < 0) {
            buf_free(&in);
            buf_free(&outb);
            conn_reply_error(c, 500, "RUNTIME_ERROR", "cannot write %s: %s", e->key,
                             strerror(errno));
            goto out;
        }
        buf_free(&in);
        buf_free(&outb);
        if (nres++)
            buf_puts(&res, ",");
        json_put_cstr(&res, e->key);
        buf_printf(&res, ":{\"replacedCount\":%ld}", count);
    }
    buf_puts(&res, "}");
    if (verbose && strcmp(verbose, "true") == 0)
        conn_reply_json(c, 200, &res);
    else
        conn_reply_empty(c);
out:
    buf_free(&res);
    free(verbose);
    json_free(req);
}

void files_handle_permissions(struct conn *c)
{
    struct json *req = body_json(c, JSON_OBJECT), *e;
    const char *what = "";

    if (!req)
        return;
    for (e = req->child; e; e = e->next) {
        if (e->type != JSON_OBJECT || apply_perms(e->key, e, &what) < 0) {
            int bad = e->type != JSON_OBJECT || errno == EINVAL, missing = errno == ENOENT;
            conn_reply_error(c,
                             bad       ? 400
                             : missing ? 404
                                       : 500,
                             bad       ? "INVALID_REQUEST_BODY"
                             : missing ? "FILE_NOT_FOUND"
                                       : "RUNTIME_ERROR",
                             "%s %s: %s", what, e->key, strerror(errno));
            goto out;
        }
    }
    conn_reply_empty(c);
out:
    json_free(req);
}

void files_handle_mv(struct conn *c)
{
    struct json *req = body_json(c, JSON_ARRAY), *e;

    if (!req)
        return;
    for (e = req->child; e; e = e->next) {
        const char *src = jstr(e, "src"), *dest = jstr(e, "dest");
        if (!src || !dest || !*src || !*dest) {
            conn_reply_error(c, 400, "INVALID_REQUEST_BODY", "each entry needs 'src' and 'dest'");
            goto out;
        }
        if (mkparents(dest) < 0 || rename(src, dest) < 0) {
            int missing = errno == ENOENT;
            conn_reply_error(c, missing ? 404 : 500, missing ? "FILE_NOT_FOUND" : "RUNTIME_ERROR",
                             "move %s to %s: %s", src, dest, strerror(errno));
            goto out;
        }
    }
    conn_reply_empty(c);
out:
    json_free(req);
}
