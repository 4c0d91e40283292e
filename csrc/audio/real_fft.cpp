#include "audio/real_fft.h"

#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"

namespace minicpmo {

namespace {

using cd = std::complex<double>;

// butterfly constants: cos / sin of 2 pi / 5, 4 pi / 5 and 2 pi / 3
const double kC51 = std::cos(2.0 * M_PI / 5.0), kC52 = std::cos(4.0 * M_PI / 5.0);
const double kS51 = std::sin(2.0 * M_PI / 5.0), kS52 = std::sin(4.0 * M_PI / 5.0);
const double kS31 = std::sin(2.0 * M_PI / 3.0);

// Plain complex product: std::complex's operator* goes through NaN-recovery code (__muldc3)
// that is several times slower and buys nothing for finite inputs.
inline cd mul(const cd & a, const cd & b) {
    return {a.real() * b.real() - a.imag() * b.imag(), a.real() * b.imag() + a.imag() * b.real()};
}

void check_size(size_t n, const char * what) {
    if (n < 1 || n > kMaxFftSize) {
        fail(Status::invalid_argument, std::string(what) + ": length " + std::to_string(n) + " is outside [1, " +
                                           std::to_string(kMaxFftSize) + "]");
    }
}

// Radices in the order the stages use them: 4s first (fewest operations per point), then 2, 3, 5
// (all with hand-written butterflies), then any other prime factor (done as a direct DFT).
std::vector<size_t> factorize(size_t n) {
    std::vector<size_t> f;
    while (n % 4 == 0) { f.push_back(4); n /= 4; }
    for (size_t p : {size_t(2), size_t(3), size_t(5)}) {
        while (n % p == 0) { f.push_back(p); n /= p; }
    }
    for (size_t p = 7; p * p <= n; p += 2) {
        while (n % p == 0) { f.push_back(p); n /= p; }
    }
    if (n > 1) f.push_back(n);
    return f;
}

}  // namespace

ComplexFft::ComplexFft(size_t n) : n_(n) {
    check_size(n, "ComplexFft");
    roots_.resize(n);
    for (size_t t = 0; t < n; ++t) {
        // angle from the exact integer ratio t / n (no accumulated rounding)
        const double a = -2.0 * M_PI * double(t) / double(n);
        roots_[t] = {std::cos(a), std::sin(a)};
    }
    size_t stride = 1;
    size_t len = n;  // length of the sub-transforms the next stage splits
    for (size_t p : factorize(n)) {
        const size_t m = len / p;
        stages_.push_back({p, m, stride, twiddles_.size()});
        if (p > max_radix_) max_radix_ = p;
        for (size_t j = 0; j < m; ++j) {
            for (size_t r = 0; r < p; ++r) twiddles_.push_back(roots_[(j * r * stride) % n]);
        }
        stride *= p;
        len = m;
    }
}

void ComplexFft::forward(const cd * in, cd * out, cd * work) const {
    // Stockham passes alternate between two buffers; start in the one that makes the last pass
    // write `out`.
    cd * buf[2] = {out, work};
    int cur = int(stages_.size() % 2);
    std::memcpy(static_cast<void *>(buf[cur]), in, n_ * sizeof(cd));
    // a direct-DFT stage needs 2 * radix values of scratch: on the stack unless a prime factor is large
    cd small[128];
    std::vector<cd> large;
    if (max_radix_ > 64) large.resize(2 * max_radix_);
    cd * const av = max_radix_ > 64 ? large.data() : small;
    cd * const bv = av + max_radix_;
    for (const Stage & st : stages_) {
        const cd * x = buf[cur];
        cd * y = buf[1 - cur];
        const size_t p = st.radix, m = st.m, s = st.stride;
        const cd * tw_all = twiddles_.data() + st.twiddle_offset;
        for (size_t j = 0; j < m; ++j) {
            const cd * tw = tw_all + j * p;
            for (size_t k = 0; k < s; ++k) {
                const cd * xin = x + k + s * j;
                cd * yout = y + k + s * p * j;
                if (p == 4) {
                    const cd a0 = xin[0], a1 = xin[s * m], a2 = xin[2 * s * m], a3 = xin[3 * s * m];
                    const cd t0 = a0 + a2, t1 = a0 - a2, t2 = a1 + a3;
                    const cd t3 = {a1.imag() - a3.imag(), a3.real() - a1.real()};  // -i * (a1 - a3)
                    yout[0] = t0 + t2;
                    yout[s] = mul(t1 + t3, tw[1]);
                    yout[2 * s] = mul(t0 - t2, tw[2]);
                    yout[3 * s] = mul(t1 - t3, tw[3]);
                } else if (p == 2) {
                    const cd a0 = xin[0], a1 = xin[s * m];
                    yout[0] = a0 + a1;
                    yout[s] = mul(a0 - a1, tw[1]);
                } else if (p == 5) {
                    const size_t d = s * m;
                    const cd a0 = xin[0], a1 = xin[d], a2 = xin[2 * d], a3 = xin[3 * d], a4 = xin[4 * d];
                    const cd t1 = a1 + a4, t2 = a2 + a3, t3 = a1 - a4, t4 = a2 - a3;
                    const cd m1 = a0 + kC51 * t1 + kC52 * t2, m2 = a0 + kC52 * t1 + kC51 * t2;
                    const cd n1 = kS51 * t3 + kS52 * t4, n2 = kS52 * t3 - kS51 * t4;
                    const cd i1 = {n1.imag(), -n1.real()}, i2 = {n2.imag(), -n2.real()};  // -i * n
                    yout[0] = a0 + t1 + t2;
                    yout[s] = mul(m1 + i1, tw[1]);
                    yout[2 * s] = mul(m2 + i2, tw[2]);
                    yout[3 * s] = mul(m2 - i2, tw[3]);
                    yout[4 * s] = mul(m1 - i1, tw[4]);
                } else if (p == 3) {
                    const cd a0 = xin[0], a1 = xin[s * m], a2 = xin[2 * s * m];
                    const cd t1 = a1 + a2, t2 = a1 - a2;
                    const cd c = a0 - 0.5 * t1;
                    const cd i = {kS31 * t2.imag(), -kS31 * t2.real()};  // -i * sin(2 pi / 3) * t2
                    yout[0] = a0 + t1;
                    yout[s] = mul(c + i, tw[1]);
                    yout[2 * s] = mul(c - i, tw[2]);
                } else {
                    // direct DFT of length p; its roots exp(-2 pi i q r / p) are roots_[(q r mod p) n/p]
                    const size_t step = n_ / p;
                    for (size_t q = 0; q < p; ++q) av[q] = xin[q * s * m];
                    for (size_t r = 0; r < p; ++r) {
                        double re = 0.0, im = 0.0;
                        size_t e = 0;  // q * r mod p
                        for (size_t q = 0; q < p; ++q) {
                            const cd & w = roots_[e * step];
                            re += av[q].real() * w.real() - av[q].imag() * w.imag();
                            im += av[q].real() * w.imag() + av[q].imag() * w.real();
                            e += r;
                            if (e >= p) e -= p;
                        }
                        bv[r] = {re, im};
                    }
                    yout[0] = bv[0];
                    for (size_t r = 1; r < p; ++r) yout[r * s] = mul(bv[r], tw[r]);
                }
            }
        }
        cur = 1 - cur;
    }
}

RealFft::RealFft(size_t n) : n_(n), half_(n % 2 == 0 ? n / 2 : n) {
    check_size(n, "RealFft");
    if (n % 2 == 0) {
        split_.resize(n / 2 + 1);
        for (size_t k = 0; k <= n / 2; ++k) {
            const double a = -2.0 * M_PI * double(k) / double(n);
            split_[k] = {std::cos(a), std::sin(a)};
        }
    }
}

void RealFft::forward(const double * in, cd * out, cd * work) const {
    const size_t h = half_.size();
    cd * z = work;          // packed input
    cd * zf = work + h;     // its transform
    cd * scratch = work + 2 * h;
    if (n_ % 2 != 0) {
        for (size_t j = 0; j < n_; ++j) z[j] = {in[j], 0.0};
        half_.forward(z, zf, scratch);
        for (size_t k = 0; k < n_bins(); ++k) out[k] = zf[k];
        return;
    }
    // z[j] = x[2j] + i x[2j+1]; with Z its FFT, the even-sample and odd-sample spectra are
    // E[k] = (Z[k] + conj(Z[h-k])) / 2 and O[k] = -i (Z[k] - conj(Z[h-k])) / 2, and
    // X[k] = E[k] + exp(-2 pi i k / n) O[k].
    for (size_t j = 0; j < h; ++j) z[j] = {in[2 * j], in[2 * j + 1]};
    half_.forward(z, zf, scratch);
    for (size_t k = 0; k <= h; ++k) {
        const cd zk = zf[k % h];
        const cd zc = std::conj(zf[(h - k) % h]);
        const cd e = 0.5 * (zk + zc);
        const cd d = 0.5 * (zk - zc);
        const cd o = {d.imag(), -d.real()};  // -i * d
        out[k] = e + mul(split_[k], o);
    }
}

}  // namespace minicpmo
