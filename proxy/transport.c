/* SPDX-License-Identifier: MIT */
/* Transports: the URI sofia binds for a configured one, and the TLS files checked with OpenSSL
 * before sofia reads them. sofia takes only a directory (TPTAG_CERTIFICATE) holding agent.pem
 * and cafile.pem, loads the first certificate of agent.pem without its chain, and starts a TLS
 * listener even when the certificate or the key cannot be loaded; hence the checks here and the
 * private directory we fill with exactly what was checked. */
#define LOG_SUBSYSTEM LOG_sip
#include <arpa/inet.h>
#include <assert.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "macro.h"
#include "sofia.h"
#include "transport.h"

#include <sofia-sip/sofia_features.h>

int transport_bind_uri(const char *uri, char **ret, bool *ret_tls) {
        su_home_t home[1] = {SU_HOME_INIT(home)};
        int r = 0;
        url_t *url = url_make(home, uri);
        if (!url || (url->url_type != url_sip && url->url_type != url_sips)) {
                r = -EINVAL;
                goto finish;
        }
        char transport[16] = "";
        if (url->url_params)
                url_param(url->url_params, "transport", transport, sizeof transport);
        bool tls = url->url_type == url_sips || strcaseeq(transport, "tls");
        if (tls && strcaseeq(transport, "tls")) {
                char *params = su_strdup(home, url->url_params);
                if (!params) {
                        r = -ENOMEM;
                        goto finish;
                }
                url->url_params = url_strip_param_string(params, "transport");
                if (url->url_params && !*url->url_params)
                        url->url_params = NULL;
        }
        if (tls) {
                url->url_type = url_sips;
                url->url_scheme = "sips";
        }
        char *s = url_as_string(home, url);
        char *copy = s ? strdup(s) : NULL;
        if (!copy) {
                r = -ENOMEM;
                goto finish;
        }
        *ret = copy;
        *ret_tls = tls;
finish:
        su_home_deinit(home);
        return r;
}

static void x509_stack_freep(STACK_OF(X509) **s) {
        if (*s)
                sk_X509_pop_free(*s, X509_free);
}
#define _cleanup_x509_stack_ _cleanup_(x509_stack_freep)

static void evp_pkey_freep(EVP_PKEY **k) {
        EVP_PKEY_free(*k);
}

static void filep(FILE **f) {
        if (*f)
                fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(filep)

/* Opens a file to read, refusing directories; logs and returns -errno on failure. */
static int open_pem(const char *what, const char *path, FILE **ret) {
        FILE *f = fopen(path, "re");
        if (!f)
                return log_error_errno(errno, "%s '%s': cannot read it: %m", what, path);
        struct stat st;
        int e = fstat(fileno(f), &st) < 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
        if (e != 0) {
                fclose(f);
                return log_error_errno(e, "%s '%s': cannot read it: %m", what, path);
        }
        *ret = f;
        return 0;
}

/* Every certificate of a PEM file, in file order (other PEM blocks skipped). */
static int read_certificates(const char *what, const char *path, STACK_OF(X509) **ret) {
        _cleanup_fclose_ FILE *f = NULL;
        int r = open_pem(what, path, &f);
        if (r < 0)
                return r;
        _cleanup_x509_stack_ STACK_OF(X509) *certs = sk_X509_new_null();
        if (!certs)
                return log_oom();
        X509 *x;
        while ((x = PEM_read_X509(f, NULL, NULL, NULL)))
                if (sk_X509_push(certs, x) <= 0) {
                        X509_free(x);
                        return log_oom();
                }
        ERR_clear_error();
        if (ferror(f))
                return log_error_errno(EIO, "%s '%s': cannot read it: %m", what, path);
        if (sk_X509_num(certs) == 0)
                return log_error_errno(EINVAL, "%s '%s': no PEM certificate in it.", what, path);
        *ret = TAKE_PTR(certs);
        return 0;
}

static int passphrase_asked(char *buf, int size, int rwflag, void *userdata) {
        *(bool *)userdata = true;
        return -1;
}

static int read_private_key(const char *path, EVP_PKEY **ret) {
        _cleanup_fclose_ FILE *f = NULL;
        int r = open_pem("TLS private key", path, &f);
        if (r < 0)
                return r;
        bool encrypted = false;
        EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, passphrase_asked, &encrypted);
        ERR_clear_error();
        if (!key && encrypted)
                return log_error_errno(EINVAL,
                                       "TLS private key '%s': it is protected by a "
                                       "passphrase; give an unencrypted key.",
                                       path);
        if (!key)
                return log_error_errno(EINVAL, "TLS private key '%s': no PEM private key in it.",
                                       path);
        *ret = key;
        return 0;
}

static void format_time(const ASN1_TIME *t, char *buf, size_t size) {
        struct tm tm;
        if (!ASN1_TIME_to_tm(t, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
                snprintf(buf, size, "(unreadable date)");
}

/* The validity dates of each certificate of the chain: an error outside them, a warning near
 * the end. */
static int check_dates(const char *path, STACK_OF(X509) *chain, bool quiet) {
        for (int i = 0; i < sk_X509_num(chain); i++) {
                X509 *x = sk_X509_value(chain, i);
                const ASN1_TIME *not_before = X509_get0_notBefore(x);
                const ASN1_TIME *not_after = X509_get0_notAfter(x);
                char subject[256], date[64], which[300] = "";
                X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof subject);
                if (i > 0)
                        snprintf(which, sizeof which, " (chain certificate %d, '%s')", i, subject);
                if (X509_cmp_current_time(not_after) <= 0) {
                        format_time(not_after, date, sizeof date);
                        return log_error_errno(EKEYEXPIRED,
                                               "TLS certificate '%s'%s: expired on %s.", path,
                                               which, date);
                }
                if (X509_cmp_current_time(not_before) >= 0) {
                        format_time(not_before, date, sizeof date);
                        return log_error_errno(EKEYREJECTED,
                                               "TLS certificate '%s'%s: not valid before %s.", path,
                                               which, date);
                }
                int days = 0, secs = 0;
                if (!quiet && ASN1_TIME_diff(&days, &secs, NULL, not_after) &&
                    days < TRANSPORT_TLS_EXPIRY_WARNING_DAYS) {
                        format_time(not_after, date, sizeof date);
                        log_warning("TLS certificate '%s'%s expires on %s, in %d days.", path,
                                    which, date, days);
                }
        }
        return 0;
}

/* Creates dir/name (mode 0600, must not exist) with the key (if any) and the certificates of
 * both stacks (either may be NULL). */
static int write_pem(const char *dir, const char *name, EVP_PKEY *key, STACK_OF(X509) *a,
                     STACK_OF(X509) *b, int skip_b) {
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/%s", dir, name) < 0)
                return log_oom();
        _cleanup_close_ int fd =
                open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return log_error_errno(errno, "Cannot create '%s': %m", path);
        FILE *f = fdopen(fd, "w");
        if (!f)
                return log_error_errno(errno, "Cannot create '%s': %m", path);
        TAKE_FD(fd);
        bool ok = !key || PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
        for (int i = 0; ok && a && i < sk_X509_num(a); i++)
                ok = PEM_write_X509(f, sk_X509_value(a, i));
        for (int i = skip_b; ok && b && i < sk_X509_num(b); i++)
                ok = PEM_write_X509(f, sk_X509_value(b, i));
        ERR_clear_error();
        if (fclose(f) != 0 || !ok)
                return log_error_errno(EIO, "Cannot write '%s'.", path);
        return 0;
}

static int make_private_dir(char **ret) {
        _cleanup_free_ char *base = NULL, *dir = NULL;
        const char *runtime = getenv("RUNTIME_DIRECTORY"), *tmp = getenv("TMPDIR");
        if (!isempty(runtime))
                base = strndup(runtime, strcspn(runtime, ":"));
        else
                base = strdup(!isempty(tmp) ? tmp : "/tmp");
        if (!base || asprintf(&dir, "%s/sipfleet-tls-XXXXXX", base) < 0)
                return log_oom();
        if (!mkdtemp(dir))
                return log_error_errno(errno,
                                       "Cannot create a private directory for the TLS "
                                       "files under '%s': %m",
                                       base);
        *ret = TAKE_PTR(dir);
        return 0;
}

int transport_tls_prepare(const struct transport_tls_files *files, char **ret_dir) {
        _cleanup_free_ char *cert_default = NULL, *ca_default = NULL;
        const char *cert_path = files->certificate, *ca_path = files->ca_file;
        int r;

        if ((isempty(cert_path) || isempty(ca_path)) && isempty(files->certificates_dir))
                return log_error_errno(EINVAL, "TLS transports need [global] tls-certificate "
                                               "and tls-ca-file, or tls-certificates-dir.");
        if (isempty(cert_path)) {
                if (asprintf(&cert_default, "%s/agent.pem", files->certificates_dir) < 0)
                        return log_oom();
                cert_path = cert_default;
        }
        if (isempty(ca_path)) {
                if (asprintf(&ca_default, "%s/cafile.pem", files->certificates_dir) < 0)
                        return log_oom();
                ca_path = ca_default;
        }
        const char *key_path = !isempty(files->private_key) ? files->private_key : cert_path;

        _cleanup_x509_stack_ STACK_OF(X509) *chain = NULL, *cas = NULL;
        _cleanup_(evp_pkey_freep) EVP_PKEY *key = NULL;
        r = read_certificates("TLS certificate", cert_path, &chain);
        if (r < 0)
                return r;
        r = read_private_key(key_path, &key);
        if (r < 0)
                return r;
        X509 *leaf = sk_X509_value(chain, 0);
        if (X509_check_private_key(leaf, key) != 1) {
                ERR_clear_error();
                return log_error_errno(EINVAL,
                                       "TLS private key '%s': it does not match the "
                                       "certificate '%s'.",
                                       key_path, cert_path);
        }
        r = check_dates(cert_path, chain, files->quiet);
        if (r < 0)
                return r;
        r = read_certificates("TLS CA file", ca_path, &cas);
        if (r < 0)
                return r;

        _cleanup_free_ char *dir = NULL;
        r = make_private_dir(&dir);
        if (r < 0)
                return r;
        r = write_pem(dir, "agent.pem", key, chain, NULL, 0);
        if (r >= 0)
                r = write_pem(dir, "cafile.pem", NULL, cas, chain, 1);
        if (r < 0) {
                transport_tls_dir_remove(dir);
                return r;
        }
        *ret_dir = TAKE_PTR(dir);
        return 0;
}

void transport_tls_dir_remove(const char *dir) {
        if (!dir)
                return;
        static const char *const names[] = {"agent.pem", "cafile.pem"};
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, "%s/%s", dir, names[i]) >= 0 && unlink(path) < 0 &&
                    errno != ENOENT)
                        log_warning_errno(errno, "Cannot remove '%s': %m", path);
        }
        if (rmdir(dir) < 0)
                log_warning_errno(errno, "Cannot remove '%s': %m", dir);
}

/* sofia-sip 1.12.11 (Debian 12's build) ends a TLS connection in tls_free() with SSL_shutdown(),
 * BIO_free() of the socket BIO and SSL_CTX_free() of the listener's context, but never
 * SSL_free(): each TLS connection leaked its SSL object and buffers (about 47 KB), so any peer
 * could exhaust our memory by connecting again and again. (The SSL_CTX_free(), meant for the
 * listener only, is balanced by the reference the leaked SSL keeps.) This definition takes the
 * place of OpenSSL's for the whole process: when the caller is sofia's tls_free() of a 1.12
 * release, it frees the SSL too, after taking one reference on the BIO and one on the context
 * for the two frees that follow in tls_free(). Every other caller (sofia's STUN code frees its
 * SSL itself) gets OpenSSL's function unchanged. Later sofia releases free the SSL themselves. */
int SSL_shutdown(SSL *s) {
        static int (*real)(SSL *);
        if (!real) {
                *(void **)&real = dlsym(RTLD_NEXT, "SSL_shutdown"); /* POSIX's cast */
                assert(real);
        }
        int r = real(s);
        Dl_info caller;
        if (strncmp(SOFIA_SIP_VERSION, "1.12.", 5) == 0 &&
            dladdr(__builtin_return_address(0), &caller) && caller.dli_sname &&
            streq(caller.dli_sname, "tls_free") && caller.dli_fname &&
            strstr(caller.dli_fname, "libsofia-sip-ua")) {
                BIO *b = SSL_get_rbio(s);
                if (b)
                        BIO_up_ref(b);
                SSL_CTX_up_ref(SSL_get_SSL_CTX(s));
                SSL_free(s);
        }
        return r;
}

/* sofia-sip 1.12's tls_post_connection_check() reads the subjectAltName of every peer
 * certificate with X509V3_EXT_d2i() and the method's i2v(), and frees neither result: about 120
 * bytes per handshake with a certificate that has one (client certificates of phones, on
 * transports that verify them). The three definitions below take the place of OpenSSL's: when
 * sofia asks for an extension method, it gets a copy whose i2v() remembers its result; what
 * X509V3_EXT_d2i() returns to sofia is remembered too; both are freed at the X509_free() of the
 * certificate that ends that function. Callers other than libsofia-sip-ua are not affected
 * (beyond a check of the caller when sofia has something pending). */
static bool called_from_sofia(void *ret_addr) {
        Dl_info caller;
        return strncmp(SOFIA_SIP_VERSION, "1.12.", 5) == 0 && dladdr(ret_addr, &caller) &&
               caller.dli_fname && strstr(caller.dli_fname, "libsofia-sip-ua");
}

#define SAN_PENDING_MAX 8
static __thread struct {
        void *d2i[SAN_PENDING_MAX];
        const X509V3_EXT_METHOD *d2i_method[SAN_PENDING_MAX];
        STACK_OF(CONF_VALUE) *values[SAN_PENDING_MAX];
        size_t n_d2i, n_values;
} san_pending;

static __thread X509V3_EXT_METHOD san_method_copy;
static __thread const X509V3_EXT_METHOD *san_method_orig;

static STACK_OF(CONF_VALUE) *
        san_i2v(const X509V3_EXT_METHOD *method, void *ext, STACK_OF(CONF_VALUE) *extlist) {
        STACK_OF(CONF_VALUE) *r = san_method_orig->i2v(san_method_orig, ext, extlist);
        if (r && !extlist && san_pending.n_values < SAN_PENDING_MAX)
                san_pending.values[san_pending.n_values++] = r;
        return r;
}

const X509V3_EXT_METHOD *X509V3_EXT_get(X509_EXTENSION *ext) {
        static const X509V3_EXT_METHOD *(*real)(X509_EXTENSION *);
        if (!real) {
                *(void **)&real = dlsym(RTLD_NEXT, "X509V3_EXT_get");
                assert(real);
        }
        const X509V3_EXT_METHOD *m = real(ext);
        if (!m || !m->i2v || !called_from_sofia(__builtin_return_address(0)))
                return m;
        san_method_orig = m;
        san_method_copy = *m;
        san_method_copy.i2v = san_i2v;
        return &san_method_copy;
}

void *X509V3_EXT_d2i(X509_EXTENSION *ext) {
        static void *(*real)(X509_EXTENSION *);
        static const X509V3_EXT_METHOD *(*real_get)(X509_EXTENSION *);
        if (!real) {
                *(void **)&real = dlsym(RTLD_NEXT, "X509V3_EXT_d2i");
                *(void **)&real_get = dlsym(RTLD_NEXT, "X509V3_EXT_get");
                assert(real && real_get);
        }
        void *r = real(ext);
        if (r && san_pending.n_d2i < SAN_PENDING_MAX &&
            called_from_sofia(__builtin_return_address(0))) {
                const X509V3_EXT_METHOD *m = real_get(ext);
                if (m && (m->it || m->ext_free)) {
                        san_pending.d2i_method[san_pending.n_d2i] = m;
                        san_pending.d2i[san_pending.n_d2i++] = r;
                }
        }
        return r;
}

void X509_free(X509 *x) {
        static void (*real)(X509 *);
        if (!real) {
                *(void **)&real = dlsym(RTLD_NEXT, "X509_free");
                assert(real);
        }
        if ((san_pending.n_d2i > 0 || san_pending.n_values > 0) &&
            called_from_sofia(__builtin_return_address(0))) {
                for (size_t i = 0; i < san_pending.n_values; i++)
                        sk_CONF_VALUE_pop_free(san_pending.values[i], X509V3_conf_free);
                for (size_t i = 0; i < san_pending.n_d2i; i++) {
                        const X509V3_EXT_METHOD *m = san_pending.d2i_method[i];
                        if (m->it)
                                ASN1_item_free(san_pending.d2i[i], ASN1_ITEM_ptr(m->it));
                        else
                                m->ext_free(san_pending.d2i[i]);
                }
                san_pending.n_values = san_pending.n_d2i = 0;
        }
        real(x);
}
