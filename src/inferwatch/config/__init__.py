"""Configuration: YAML with ${ENV} interpolation, parsed once into typed dataclasses.

``loader`` checks any file against dataclass type hints (``file:key: message`` problems, all at
once); ``sections`` holds one dataclass per section; ``root`` the whole sidecar file; ``validate``
the checks across keys; ``actions`` the actions file; ``templates`` the matcher and template
languages. Components import the section they take from here.
"""

from .actions import (ActionConfig, ActionsConfig, AuditLogConfig, HTTPActionConfig, load_actions_config,
                      read_token_file, validate_actions)
from .loader import ConfigError, build, interpolate_env, read_yaml
from .root import Config, load_config, parse_config
from .sections import *  # noqa: F401,F403 (every section dataclass and its constants)
from .sections import CODECS

__all__ = ["Config", "ConfigError", "load_config", "parse_config", "interpolate_env", "CODECS", "build", "read_yaml",
           "ActionConfig", "ActionsConfig", "AuditLogConfig", "HTTPActionConfig", "load_actions_config",
           "read_token_file", "validate_actions"]
