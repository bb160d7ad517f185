/* Preloaded into nbdkit by scripts/sanitize.sh, after the sanitizer
 * runtime; not part of rewind.
 *
 * With libasan.so or libtsan.so preloaded, glibc's setlocale lock is
 * already unbalanced when main starts in any program linked with
 * libp11-kit (nbdkit is, through gnutls).  At exit, p11-kit's destructor
 * calls freelocale, which waits on that lock for ever, so nbdkit hangs in
 * exit() once it has called strerror or gettext.  A program of four lines
 * shows it; without the preload nothing hangs.
 *
 * This freelocale keeps the locale instead of freeing it.  Only nbdkit's
 * process under the sanitizer wrapper gets it, and only locales freed
 * there leak, at exit, which nbdkit's leak check (off) does not see.  The
 * plugin does not call freelocale.  docs/reliability.md, "Sanitizers". */
#include <locale.h>

void freelocale(locale_t locale) { (void)locale; }
