#include "stats/stats.hpp"

#include <algorithm>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace stats {

std::string version() { return "1.2.0"; }

Series::Series(std::string name) : name_(std::move(name)) {}

void Series::add(double value) { values_.push_back(value); }

void Series::extend(const std::vector<double>& values) {
  values_.insert(values_.end(), values.begin(), values.end());
}

void Series::require_values() const {
  if (values_.empty()) {
    throw std::domain_error("series '" + name_ + "' has no values");
  }
}

double Series::mean() const {
  require_values();
  return std::accumulate(values_.begin(), values_.end(), 0.0) / static_cast<double>(values_.size());
}

double Series::variance() const {
  require_values();
  if (values_.size() == 1) return 0.0;
  const double m = mean();
  double sum = 0.0;
  for (double v : values_) sum += (v - m) * (v - m);
  return sum / static_cast<double>(values_.size() - 1);
}

double Series::median() const {
  require_values();
  std::vector<double> sorted(values_);
  std::sort(sorted.begin(), sorted.end());
  const std::size_t mid = sorted.size() / 2;
  return sorted.size() % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2.0;
}

double Series::min() const {
  require_values();
  return *std::min_element(values_.begin(), values_.end());
}

double Series::max() const {
  require_values();
  return *std::max_element(values_.begin(), values_.end());
}

std::string Series::summary() const {
  std::ostringstream out;
  out << name_ << ": n=" << size() << " mean=" << mean() << " median=" << median() << " min=" << min()
      << " max=" << max();
  return out.str();
}

}  // namespace stats
