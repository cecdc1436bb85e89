// libstats: running summary statistics over a series of samples.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#if defined(STATS_BUILDING)
#define STATS_API __attribute__((visibility("default")))
#else
#define STATS_API
#endif

namespace stats {

// The library's own version, compiled into libstats (not the header), so a caller can tell
// which copy of the shared library it really loaded.
STATS_API std::string version();

class STATS_API Series {
 public:
  explicit Series(std::string name);

  void add(double value);
  void extend(const std::vector<double>& values);

  const std::string& name() const { return name_; }
  std::size_t size() const { return values_.size(); }
  const std::vector<double>& values() const { return values_; }

  // All of these throw std::domain_error on an empty series.
  double mean() const;
  double variance() const;  // sample variance (n - 1); 0 for a single value
  double median() const;
  double min() const;
  double max() const;

  // "name: n=3 mean=2 median=2 min=1 max=3"
  std::string summary() const;

 private:
  void require_values() const;

  std::string name_;
  std::vector<double> values_;
};

}  // namespace stats
