// Times dlib's own 68-point shape predictor on given boxes, for comparison with server/vision/shapePredictor.ts.
//
//   landmarks_bench MODEL.dat REPS < items.txt
//
// stdin: one item per line, "PGM l t r b" (binary 8-bit PGM path, dlib box with inclusive integer corners).
// stdout: one JSON object: {"model", "reps", "items": [{"pgm", "box", "ms": [REPS per-call wall times],
//         "cpu_ms": mean thread CPU time per call, "landmarks": [[x, y] x P]}]}. Each item gets one untimed warm-up
//         call first. The CPU time (CLOCK_THREAD_CPUTIME_ID around all REPS calls) is less sensitive to other load on
//         a shared machine than the wall times.
// Exit status 2 on bad usage or input, with a message on stderr.
//
// Build: g++ -O2 -o landmarks_bench landmarks_bench.cpp $(pkg-config --cflags --libs dlib-1)
// (the same flags as the reference timings in ../shared/reference/timings.json, "program_O2").
#include <dlib/image_processing.h>
#include <dlib/serialize.h>

#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

[[noreturn]] void fail(const std::string& msg) {
  std::cerr << "landmarks_bench: " << msg << "\n";
  std::exit(2);
}

// Reads the next header token of a PNM file, skipping whitespace and # comments.
std::string pnm_token(std::istream& in) {
  std::string tok;
  int c;
  while ((c = in.get()) != EOF) {
    if (c == '#') {
      while ((c = in.get()) != EOF && c != '\n') {
      }
      continue;
    }
    if (std::isspace(c)) {
      if (!tok.empty()) break;
      continue;
    }
    tok.push_back(static_cast<char>(c));
  }
  return tok;
}

// Binary 8-bit PGM (P5, maxval <= 255) into a dlib gray image, as the reference data was produced.
void load_pgm(const std::string& path, dlib::array2d<unsigned char>& img) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open " + path);
  if (pnm_token(in) != "P5") fail(path + ": not a binary PGM (P5)");
  const long w = std::atol(pnm_token(in).c_str());
  const long h = std::atol(pnm_token(in).c_str());
  const long maxval = std::atol(pnm_token(in).c_str());
  if (w <= 0 || h <= 0 || maxval <= 0 || maxval > 255) fail(path + ": unsupported PGM header");
  img.set_size(h, w);
  for (long r = 0; r < h; ++r) {
    in.read(reinterpret_cast<char*>(&img[r][0]), w);
    if (!in) fail(path + ": truncated pixel data");
  }
}

void json_string(std::ostream& out, const std::string& s) {
  out << '"';
  for (char c : s) {
    if (c == '"' || c == '\\') out << '\\' << c;
    else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out << buf;
    } else out << c;
  }
  out << '"';
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) fail("usage: landmarks_bench MODEL.dat REPS < items.txt");
  const std::string model_path = argv[1];
  const long reps = std::atol(argv[2]);
  if (reps <= 0) fail("REPS must be a positive integer");

  dlib::shape_predictor sp;
  try {
    dlib::deserialize(model_path) >> sp;
  } catch (const std::exception& e) {
    fail(model_path + ": " + e.what());
  }

  struct Item {
    std::string pgm;
    long l, t, r, b;
  };
  std::vector<Item> items;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    std::istringstream ls(line);
    Item it;
    if (!(ls >> it.pgm >> it.l >> it.t >> it.r >> it.b)) fail("bad input line: " + line);
    items.push_back(it);
  }

  std::ostringstream out;
  out << "{\"model\":";
  json_string(out, model_path);
  out << ",\"reps\":" << reps << ",\"items\":[";
  std::string loaded_path;
  dlib::array2d<unsigned char> img;
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    if (it.pgm != loaded_path) {
      load_pgm(it.pgm, img);
      loaded_path = it.pgm;
    }
    const dlib::rectangle rect(it.l, it.t, it.r, it.b);
    dlib::full_object_detection shape = sp(img, rect);  // warm-up, and the landmarks we report
    std::vector<double> ms(reps);
    timespec cpu0{}, cpu1{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu0);
    for (long k = 0; k < reps; ++k) {
      const auto t0 = std::chrono::steady_clock::now();
      dlib::full_object_detection s = sp(img, rect);
      const auto t1 = std::chrono::steady_clock::now();
      if (s.num_parts() != shape.num_parts()) fail("non-deterministic predictor output");
      ms[k] = std::chrono::duration<double, std::milli>(t1 - t0).count();
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu1);
    const double cpu_ms = ((cpu1.tv_sec - cpu0.tv_sec) * 1e3 + (cpu1.tv_nsec - cpu0.tv_nsec) / 1e6) / reps;
    if (i) out << ',';
    out << "{\"pgm\":";
    json_string(out, it.pgm);
    out << ",\"box\":[" << it.l << ',' << it.t << ',' << it.r << ',' << it.b << "],\"ms\":[";
    char buf[32];
    for (long k = 0; k < reps; ++k) {
      std::snprintf(buf, sizeof buf, "%.4f", ms[k]);
      out << (k ? "," : "") << buf;
    }
    std::snprintf(buf, sizeof buf, "%.4f", cpu_ms);
    out << "],\"cpu_ms\":" << buf << ",\"landmarks\":[";
    for (unsigned long p = 0; p < shape.num_parts(); ++p) {
      out << (p ? "," : "") << '[' << shape.part(p).x() << ',' << shape.part(p).y() << ']';
    }
    out << "]}";
  }
  out << "]}\n";
  std::cout << out.str();
  return 0;
}
