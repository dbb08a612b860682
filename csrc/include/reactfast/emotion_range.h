// Counts of REACT emotion values (rows of 25: 15 AUs, valence and arousal, 8 expression
// probabilities) outside their valid ranges, as reactfast.data.check_emotion counts them:
//   counts[0]: AUs < -tol; counts[1]: AUs > 1 + tol; counts[2]: |valence or arousal| > 1 + tol;
//   counts[3]: expression probabilities < -tol; counts[4]: rows whose 8 probabilities' sum
//   (in float64) is more than tol from 1.
// The value thresholds are float32 (-tol and 1 + tol rounded as torch rounds a Python float it
// compares a float32 tensor with); NaN is counted nowhere, as every comparison with it is false.
#pragma once
#include <cstdint>

#include "reactfast/common.h"

namespace reactfast {

// x: (rows, 25) float32; counts: 5 int64.
void emotion_range_cpu(const float* x, index_t rows, double tol, std::int64_t* counts);

}  // namespace reactfast
