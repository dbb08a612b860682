// Dynamic time warping with steps (1,0), (0,1), (1,1), squared-Euclidean local cost, float64
// accumulation and result sqrt(D[Tx-1, Ty-1]) (the REACT challenge's FRDist definition, as tslearn).
//
// The weighted form splits the feature dims into groups [start, end) with weights w_g and returns
// sum_g w_g * DTW(x[:, start:end], y[:, start:end]) (three separate DTWs per pair in REACT).
#pragma once
#include "reactfast/common.h"

namespace reactfast {

constexpr int kMaxDtwGroups = 3;

struct DtwGroups {
  int count;
  int start[kMaxDtwGroups];
  int end[kMaxDtwGroups];
  double weight[kMaxDtwGroups];
};

RF_HOST_DEVICE inline float dtw_local_cost(const float* x_row, const float* y_row, int start, int end) {
  float acc = 0.f;
  for (int d = start; d < end; ++d) {
    const float diff = x_row[d] - y_row[d];
    acc += diff * diff;
  }
  return acc;
}

// out[p] = DTW(x[p], y[p]) over all D dims; x: (P, Tx, D), y: (P, Ty, D), float32 contiguous.
void dtw_pairs_cpu(const float* x, const float* y, double* out, index_t P, index_t Tx, index_t Ty, index_t D);

// For each query m (a prediction x[m] of shape (Tx, D)) the minimum over its candidates
// y[cand_index[cand_offset[m] .. cand_offset[m+1])] of the weighted group DTW, and the candidate
// attaining it. With `abandon`, a candidate is dropped as soon as the lower bound
// sum_g w_g sqrt(min over the current row of D_g) exceeds the best value known (exact: the
// minimum is unchanged). `cells` (may be null) receives the number of DP cells computed.
void weighted_dtw_min_cpu(const float* x, const float* y, const index_t* cand_offset, const index_t* cand_index,
                          index_t M, index_t G, index_t Tx, index_t Ty, index_t D, const DtwGroups& groups,
                          bool abandon, double* out_min, index_t* out_arg, index_t* cells);

// The CUDA kernel's schedule (reactfast/dtw_warp.h) emulated on the CPU, `warps` warps per query,
// for D <= 32: the same results as weighted_dtw_min_cuda; for the tests. Returns the number of pairs
// abandoned.
index_t weighted_dtw_min_warp_emulated(const float* x, const float* y, const index_t* cand_offset,
                                    const index_t* cand_index, index_t M, index_t Tx, index_t Ty, index_t D,
                                    const DtwGroups& groups, bool abandon, int warps, double* out_min,
                                    index_t* out_arg);

// CUDA, D <= 32: weighted_dtw_min_cpu's results (without the cell count) by the warp-wavefront
// kernel, one block of `warps` warps per query, the query's best value shared by its warps for
// abandoning. Returns an error message or null.
const char* weighted_dtw_min_cuda(const float* x, const float* y, const index_t* cand_offset,
                                  const index_t* cand_index, index_t M, index_t Tx, index_t Ty, index_t D,
                                  const DtwGroups& groups, bool abandon, int warps, double* out_min,
                                  index_t* out_arg, void* stream);

// CUDA, any D (the path for D > 32), one block per pair and group:
// out[p * groups.count + g] = DTW_g(x[qi[p]], y[ci[p]]) (unweighted, sqrt applied) for P pairs.
const char* group_dtw_pairs_cuda(const float* x, const float* y, const index_t* qi, const index_t* ci, index_t P,
                                 index_t Tx, index_t Ty, index_t D, const DtwGroups& groups, double* out,
                                 void* stream);

}  // namespace reactfast
