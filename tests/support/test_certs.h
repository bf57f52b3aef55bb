#pragma once
// Throw-away TLS material for tests, made with the openssl tool at test time (no key is committed):
// a CA and two node certificates it signs ("n1", "n2", each with that DNS name), a second CA with
// a certificate that also claims to be "n2" (right name, wrong issuer), and two PSK files with the
// same identity and different keys.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace duplex::testing {

struct TestCerts {
  std::string dir;
  std::string ca, n1_cert, n1_key, n2_cert, n2_key;
  std::string rogue_ca, rogue_cert, rogue_key;  // "n2", signed by rogue_ca
  std::string psk, other_psk;
  bool ok = false;

  static TestCerts make() {
    TestCerts t;
    t.dir =
        (std::filesystem::temp_directory_path() / ("duplex-certs-" + std::to_string(::getpid()))).string();
    std::filesystem::create_directories(t.dir);
    const std::string d = t.dir;
    auto sh = [&](const std::string& cmd) {
      return std::system(("cd " + d + " && " + cmd + " 2>/dev/null").c_str()) == 0;
    };
    auto ca = [&](const std::string& name) {
      return sh(
          "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=" +
          name + " -keyout " + name + ".key -out " + name + ".pem");
    };
    auto leaf = [&](const std::string& file, const std::string& cn, const std::string& signer) {
      return sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=" + cn +
                " -keyout " + file + ".key -out " + file + ".csr") &&
             sh("printf 'subjectAltName=DNS:" + cn + "\\n' > " + file + ".ext") &&
             sh("openssl x509 -req -in " + file + ".csr -CA " + signer + ".pem -CAkey " + signer +
                ".key -CAcreateserial -days 2 -extfile " + file + ".ext -out " + file + ".pem");
    };
    t.ok = ca("ca") && ca("rogue-ca") && leaf("n1", "n1", "ca") && leaf("n2", "n2", "ca") &&
           leaf("rogue", "n2", "rogue-ca");
    t.ca = d + "/ca.pem";
    t.n1_cert = d + "/n1.pem";
    t.n1_key = d + "/n1.key";
    t.n2_cert = d + "/n2.pem";
    t.n2_key = d + "/n2.key";
    t.rogue_ca = d + "/rogue-ca.pem";
    t.rogue_cert = d + "/rogue.pem";
    t.rogue_key = d + "/rogue.key";
    t.psk = d + "/psk";
    t.other_psk = d + "/other-psk";
    std::ofstream(t.psk)
        << "# test\nduplex:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
    std::ofstream(t.other_psk) << "duplex:ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
    return t;
  }
  void remove() const {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

}  // namespace duplex::testing
