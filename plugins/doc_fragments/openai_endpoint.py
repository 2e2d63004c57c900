# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # Options of every module that talks to an OpenAI-compatible endpoint. Mirrors
    # openai_endpoint_argument_spec() in plugins/module_utils/openai_client.py. List this fragment
    # BEFORE ansible.builtin.url in extends_documentation_fragment so that its url wins.
    DOCUMENTATION = r"""
options:
  url:
    description:
      - Base URL of the OpenAI-compatible server, for example V(http://127.0.0.1:8000).
      - It may include a path when a reverse proxy serves the whole server under one, for example
        V(https://gateway.example.com/vllm).
      - Health and version are requested at this URL; the OpenAI API at O(url) + O(path_prefix) + C(/v1/...).
    type: str
    required: true
  path_prefix:
    description:
      - Path put in front of the OpenAI API routes (C(/v1/models), C(/v1/completions), ...) only.
      - Gateways such as KServe serve the OpenAI API under V(/openai) while health stays at the root.
    type: str
    default: ''
  api_key:
    description:
      - 'API key, sent as C(Authorization: Bearer <api_key>) with every request.'
      - The value of the server's C(--api-key) option or C(VLLM_API_KEY) environment variable.
      - Never shown in results or messages.
      - Takes precedence over an C(Authorization) entry in O(headers).
    type: str
  headers:
    description:
      - Extra HTTP headers sent with every request, for example a gateway's routing header.
    type: dict
    default: {}
  request_timeout:
    description:
      - Seconds one request may take before it counts as failed.
      - Modules that wait cap it by the time left in their overall budget (never below 1 second).
    type: float
    default: 30
  ca_path:
    description:
      - PEM file of the CA certificates used to validate the server certificate over HTTPS.
    type: path
"""
