// Test driver for the logits operations of csrc/sampling (logits_ops.h, pick.h), linked against the
// installed libminicpmo. Reads three lines from stdin: the op and its numeric arguments, a row of
// numbers (hex or decimal; logits are rounded to float), and a row of ids (may be empty). Prints the
// result on one line: the processed row as C99 hex floats, or one integer.
// Usage: echo -e "top_k 3\n1 2 3 4\n" | logits_ops_demo
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "sampling/logits_ops.h"
#include "sampling/pick.h"

using namespace minicpmo;

namespace {

template <typename T>
std::vector<T> numbers(const std::string & line) {
    std::istringstream in(line);
    std::vector<T> v;
    std::string word;
    while (in >> word) v.push_back(static_cast<T>(std::strtod(word.c_str(), nullptr)));
    return v;
}

template <typename T>
void print_row(const std::vector<T> & v) {
    for (size_t i = 0; i < v.size(); ++i) std::printf("%s%a", i ? " " : "", static_cast<double>(v[i]));
    std::printf("\n");
}

// the next argument of the op line, parsed like the rows (hex floats welcome)
double arg(std::istringstream & in) {
    std::string word;
    in >> word;
    return std::strtod(word.c_str(), nullptr);
}

NucleusEnd nucleus_end(const std::string & s) { return s == "passes" ? NucleusEnd::passes : NucleusEnd::reaches; }

}  // namespace

int main() {
    std::string head, row, id_line;
    std::getline(std::cin, head);
    std::getline(std::cin, row);
    std::getline(std::cin, id_line);
    std::istringstream args(head);
    std::string op;
    args >> op;
    std::vector<float> x = numbers<float>(row);
    const std::vector<double> w = numbers<double>(row);
    const std::vector<int32_t> ids = numbers<int32_t>(id_line);
    try {
        if (op == "temperature") {
            divide_by_temperature(x, static_cast<float>(arg(args)));
        } else if (op == "penalise_ids" || op == "divide_ids") {
            const float p = static_cast<float>(arg(args));
            op == "penalise_ids" ? penalise_ids(x, distinct_ids(ids, 0), p) : divide_ids(x, distinct_ids(ids, 0), p);
        } else if (op == "penalise_by_count") {
            const float p = static_cast<float>(arg(args));
            const size_t window = static_cast<size_t>(arg(args));
            penalise_by_count(x, ids, window_start(ids.size(), window), p);
        } else if (op == "top_k") {
            mask_outside_top_k(x, static_cast<size_t>(arg(args)));
        } else if (op == "top_p_descending") {
            const float p = static_cast<float>(arg(args));
            std::string end;
            args >> end;
            mask_outside_top_p_descending(x, p, nucleus_end(end));
        } else if (op == "top_p_ascending") {
            const float p = static_cast<float>(arg(args));
            const int min_keep = static_cast<int>(arg(args));
            mask_outside_top_p_ascending(x, p, min_keep);
        } else if (op == "softmax_float_shift") {
            print_row(softmax_float_shift(x));
            return 0;
        } else if (op == "exp_weights") {
            print_row(exp_weights(x, x[argmax(x)]));
            return 0;
        } else if (op == "nucleus_size") {
            const float p = static_cast<float>(arg(args));
            std::string end;
            args >> end;
            std::printf("%zu\n", nucleus_size(w, p, nucleus_end(end)));
            return 0;
        } else if (op == "pick_inverse_cdf") {
            std::printf("%zu\n", pick_inverse_cdf(w, arg(args)));
            return 0;
        } else if (op == "argmax") {
            std::printf("%zu\n", argmax(x));
            return 0;
        } else {
            std::fprintf(stderr, "unknown op %s\n", op.c_str());
            return 2;
        }
    } catch (const std::exception & e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    print_row(x);
    return 0;
}
