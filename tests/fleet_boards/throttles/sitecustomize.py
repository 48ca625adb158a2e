"""A board that starts throttling once a model is being timed: put this folder first on PYTHONPATH (the test
fleet's `throttles` board gets it through its sshd's SetEnv). Its installs pass the thermal check made before
anything switches (no zone is hot), but every timed run reports the CPU clock falling during it, as a Raspberry Pi's
firmware capping the clock under load would: a stand-in for the hardware, at the one place edgert reads it (the
benchmark's thermal statistics)."""

import importlib.abc
import importlib.util
import sys


class _ThrottleWhenTimed(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "edgert.measure.results":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        sys.meta_path.insert(0, self)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            measured = module.thermal_stats

            def throttling(trace, run):
                import dataclasses

                return dataclasses.replace(measured(trace, run), freq_start_mhz=1800.0, freq_min_mhz=600.0,
                                           freq_end_mhz=600.0, throttled=True,
                                           reason="CPU frequency fell from 1800 to 600 MHz (67%) during the run")

            module.thermal_stats = throttling

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _ThrottleWhenTimed())
