// NBD over TLS (issue 6, item 7): nbdkit's --tls=require in front of the
// rewind plugin, with X.509 certificates (made with certtool at test time,
// client certificates required with --tls-verify-peer) and with a
// pre-shared key (psktool).  A TLS client reads and writes, also a
// time-travel export; nbdinfo connects with an nbds+unix:// URI; a
// plaintext client, a client of another CA and a client with a wrong key
// are refused.  The set-up is docs/reliability.md, "Security".
#include <libnbd.h>

#include <filesystem>

#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

void Run(const std::vector<std::string>& argv) {
  ProcResult r = RunProcess(argv);
  INFO(r.Describe());
  REQUIRE(r.ok());
}

void RequireTool(const std::string& tool) {
  INFO(tool << " is needed (Debian package gnutls-bin; scripts/install-deps.sh installs it)");
  REQUIRE(!FindInPath(tool).empty());
}

// A CA, a server certificate and a client certificate, in the layout
// nbdkit (--tls-certificates=DIR: ca-cert.pem, server-cert.pem,
// server-key.pem) and libnbd (ca-cert.pem, client-cert.pem,
// client-key.pem) expect.  ca_name makes CAs that do not trust each other.
void MakeCertificates(const TempDir& tmp, const std::string& name, const std::string& ca_name) {
  const std::string d = tmp / name;
  std::filesystem::create_directories(d + "/server");
  std::filesystem::create_directories(d + "/client");
  WriteFile(d + "/ca.info", "cn = " + ca_name + "\nca\ncert_signing_key\nexpiration_days = 2\n");
  WriteFile(d + "/server.info",
            "organization = rewind test\ncn = localhost\ndns_name = localhost\n"
            "ip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\n"
            "expiration_days = 2\n");
  WriteFile(d + "/client.info",
            "organization = rewind test\ncn = client\ntls_www_client\nencryption_key\nsigning_key\n"
            "expiration_days = 2\n");
  Run({"certtool", "--generate-privkey", "--outfile", d + "/ca-key.pem"});
  Run({"certtool", "--generate-self-signed", "--load-privkey", d + "/ca-key.pem", "--template",
       d + "/ca.info", "--outfile", d + "/ca-cert.pem"});
  for (const std::string who : {"server", "client"}) {
    const std::string dir = d + "/" + who;
    Run({"certtool", "--generate-privkey", "--outfile", dir + "/" + who + "-key.pem"});
    Run({"certtool", "--generate-certificate", "--load-ca-certificate", d + "/ca-cert.pem",
         "--load-ca-privkey", d + "/ca-key.pem", "--load-privkey", dir + "/" + who + "-key.pem",
         "--template", d + "/" + who + ".info", "--outfile", dir + "/" + who + "-cert.pem"});
    std::filesystem::copy_file(d + "/ca-cert.pem", dir + "/ca-cert.pem");
  }
}

enum class Auth { kNone, kCertificates, kPsk };

// Connects with TLS required (or, for kNone, disabled); "" on success,
// else libnbd's error.  On success the handle is returned in *out.
std::string Connect(const std::string& socket, Auth auth, const std::string& cred,
                    const std::string& export_name, nbd_handle** out,
                    const std::string& username = "alice") {
  nbd_handle* h = nbd_create();
  REQUIRE(h != nullptr);
  bool ok = nbd_set_export_name(h, export_name.c_str()) == 0;
  if (auth == Auth::kNone) {
    ok = ok && nbd_set_tls(h, LIBNBD_TLS_DISABLE) == 0;
  } else {
    ok = ok && nbd_set_tls(h, LIBNBD_TLS_REQUIRE) == 0;
    if (auth == Auth::kCertificates) ok = ok && nbd_set_tls_certificates(h, cred.c_str()) == 0;
    if (auth == Auth::kPsk) {
      ok = ok && nbd_set_tls_psk_file(h, cred.c_str()) == 0 &&
           nbd_set_tls_username(h, username.c_str()) == 0;
    }
  }
  ok = ok && nbd_connect_unix(h, socket.c_str()) == 0;
  if (!ok) {
    std::string err = NbdClient::LastError();
    nbd_close(h);
    return err.empty() ? "failed" : err;
  }
  *out = h;
  return "";
}

// Writes, flushes, reads back over TLS; takes a checkpoint and reads the
// time-travel export over TLS too.
void ReadWriteOverTls(const std::string& socket, const std::string& dir, Auth auth,
                      const std::string& cred, uint64_t seed) {
  nbd_handle* h = nullptr;
  REQUIRE(Connect(socket, auth, cred, "", &h) == "");
  CHECK(nbd_get_tls_negotiated(h) == 1);
  const auto a = Pattern(1 << 20, seed), b = Pattern(1 << 20, seed + 1);
  REQUIRE(nbd_pwrite(h, a.data(), a.size(), 1 << 20, 0) == 0);
  REQUIRE(nbd_flush(h, 0) == 0);
  const std::string cp = "tls-" + std::to_string(seed);
  RunCliJson({"checkpoint", dir, "--name", cp, "--json"});
  REQUIRE(nbd_pwrite(h, b.data(), b.size(), 1 << 20, LIBNBD_CMD_FLAG_FUA) == 0);
  std::vector<uint8_t> got(b.size());
  REQUIRE(nbd_pread(h, got.data(), got.size(), 1 << 20, 0) == 0);
  CHECK(got == b);
  nbd_shutdown(h, 0);
  nbd_close(h);

  nbd_handle* past = nullptr;
  REQUIRE(Connect(socket, auth, cred, "@" + cp, &past) == "");
  CHECK(nbd_get_tls_negotiated(past) == 1);
  CHECK(nbd_is_read_only(past) == 1);
  REQUIRE(nbd_pread(past, got.data(), got.size(), 1 << 20, 0) == 0);
  CHECK(got == a);
  nbd_close(past);
}

TEST_CASE("tls: --tls=require with X.509 certificates (client certificates verified), and "
          "plaintext and foreign clients refused",
          "[e2e][security][tls]") {
  RequireNbdkitOrSkip();
  RequireTool("certtool");
  TempDir tmp;
  MakeCertificates(tmp, "pki", "rewind test CA");
  MakeCertificates(tmp, "other", "another CA");
  const std::string dir = tmp / "store";
  NbdServerOptions o = RewindOptions(tmp, {"dir=" + dir, "size=16M"});
  o.nbdkit_flags = {"--tls=require", "--tls-certificates=" + tmp / "pki/server",
                    "--tls-verify-peer"};
  auto server = NbdServer::Start(o);

  ReadWriteOverTls(server->socket(), dir, Auth::kCertificates, tmp / "pki/client", 1);

  // nbdinfo with a TLS URI.
  {
    ProcResult r = RunProcess({"nbdinfo", "--json",
                               "nbds+unix:///?socket=" + server->socket() +
                                   "&tls-certificates=" + tmp / "pki/client"});
    INFO(r.Describe());
    CHECK(r.ok());
    CHECK(r.out.find("\"export-size\": 16777216") != std::string::npos);
  }

  nbd_handle* h = nullptr;
  // A plaintext client.
  std::string err = Connect(server->socket(), Auth::kNone, "", "", &h);
  INFO("plaintext: " << err);
  CHECK(err != "");
  // A client whose certificate another CA signed (and which does not
  // trust the server's).
  err = Connect(server->socket(), Auth::kCertificates, tmp / "other/client", "", &h);
  INFO("other CA: " << err);
  CHECK(err != "");
  // The server's CA but no client certificate: --tls-verify-peer refuses.
  std::filesystem::create_directories(tmp / "nocert");
  std::filesystem::copy_file(tmp / "pki/ca-cert.pem", tmp / "nocert/ca-cert.pem");
  err = Connect(server->socket(), Auth::kCertificates, tmp / "nocert", "", &h);
  INFO("no client certificate: " << err);
  CHECK(err != "");
  // nbdinfo without TLS.
  {
    ProcResult r = RunProcess({"nbdinfo", "nbd+unix:///?socket=" + server->socket()});
    INFO(r.Describe());
    CHECK_FALSE(r.ok());
  }
  // Still serving TLS clients.
  ReadWriteOverTls(server->socket(), dir, Auth::kCertificates, tmp / "pki/client", 3);
  ExitStatus es = server->Stop();
  INFO(server->log());
  CHECK(es.success());
}

TEST_CASE("tls: --tls=require with a pre-shared key (--tls-psk), and plaintext and wrong keys refused",
          "[e2e][security][tls]") {
  RequireNbdkitOrSkip();
  RequireTool("psktool");
  TempDir tmp;
  const std::string keys = tmp / "keys.psk";
  Run({"psktool", "-u", "alice", "-p", keys});
  Run({"psktool", "-u", "alice", "-p", tmp / "wrong.psk"});  // another random key
  const std::string dir = tmp / "store";
  NbdServerOptions o = RewindOptions(tmp, {"dir=" + dir, "size=16M"});
  o.nbdkit_flags = {"--tls=require", "--tls-psk=" + keys};
  auto server = NbdServer::Start(o);

  ReadWriteOverTls(server->socket(), dir, Auth::kPsk, keys, 11);
  {
    ProcResult r = RunProcess({"nbdinfo", "--json",
                               "nbds+unix://alice@/?socket=" + server->socket() +
                                   "&tls-psk-file=" + keys});
    INFO(r.Describe());
    CHECK(r.ok());
    CHECK(r.out.find("\"export-size\": 16777216") != std::string::npos);
  }
  nbd_handle* h = nullptr;
  std::string err = Connect(server->socket(), Auth::kNone, "", "", &h);
  INFO("plaintext: " << err);
  CHECK(err != "");
  err = Connect(server->socket(), Auth::kPsk, tmp / "wrong.psk", "", &h);
  INFO("wrong key: " << err);
  CHECK(err != "");
  err = Connect(server->socket(), Auth::kPsk, keys, "", &h, "mallory");
  INFO("unknown user: " << err);
  CHECK(err != "");
  ReadWriteOverTls(server->socket(), dir, Auth::kPsk, keys, 13);
  ExitStatus es = server->Stop();
  INFO(server->log());
  CHECK(es.success());
}

}  // namespace
}  // namespace rwd::test
